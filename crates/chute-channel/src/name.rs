//! The API rule for channel names, owned here once: `chute run` checks the names
//! in a job's configuration with it and Pipe mode the names its FIFOs take, so a
//! name one accepts the other never refuses.

/// The longest channel name the API takes.
pub const MAX_CHANNEL_NAME: usize = 64;

/// Why a channel name breaks the rule. The messages are the problem alone; the
/// caller says where the name came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// No name at all.
    #[error("is empty: name the channel, e.g. \"train\"")]
    Empty,
    /// Longer than [`MAX_CHANNEL_NAME`] bytes.
    #[error("'{name}' is {len} characters long; channel names have at most {MAX_CHANNEL_NAME}")]
    TooLong {
        /// The name given.
        name: String,
        /// Its length.
        len: usize,
    },
    /// A character outside `[A-Za-z0-9.\-_]`.
    #[error(
        "'{name}' contains {found:?}; channel names may only use letters, digits, '.', '-' and '_'"
    )]
    BadCharacter {
        /// The name given.
        name: String,
        /// The first character that is not allowed.
        found: char,
    },
    /// `.` or `..`: allowed by the pattern, but a channel's directory or FIFO
    /// would then be its parent directory.
    #[error("'{name}' cannot be a file or directory name: choose another name")]
    Dots {
        /// The name given.
        name: String,
    },
}

/// Checks the API rule: `[A-Za-z0-9.\-_]+`, at most 64 characters, and not `.`
/// or `..` (which would leave the data directory).
pub fn check_channel_name(name: &str) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Err(ChannelNameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(ChannelNameError::BadCharacter {
            name: name.to_owned(),
            found,
        });
    }
    if name == "." || name == ".." {
        return Err(ChannelNameError::Dots {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_rule() {
        for good in ["train", "train-1.v2_x", "A", &"x".repeat(64)] {
            assert_eq!(check_channel_name(good), Ok(()), "{good:?}");
        }
        for bad in ["", "a/b", "..", ".", "a b", "é", &"x".repeat(65)] {
            assert!(check_channel_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_channel_name("a/b")
            .unwrap_err()
            .to_string()
            .contains("contains '/'"));
    }
}
