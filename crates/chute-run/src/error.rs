//! Everything that can stop `chute run` before or around the training command,
//! and the exit code each one maps to (doc/SEMANTICS.md: 2 bad usage or input, 3 the
//! data source could not be reached or read), through the [`Classify`] every
//! library error implements.

use std::path::PathBuf;

use chute_channel::hosts::HostsError;
use chute_channel::ChannelError;
use chute_plan::{Classify, ErrorClass};

use crate::config::{ConfigError, InputMode};

/// Exit code when the command cannot be found (as shells and Docker report it).
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when the command cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;

/// Why `chute run` stopped without the command's own exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The channel configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The host list could not be determined.
    #[error("{0}")]
    Hosts(#[from] HostsError),
    /// `--resource-config` cannot be read.
    #[error("cannot read --resource-config {path}: {source}; check the path")]
    ResourceConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The input directory (or something in it) cannot be prepared.
    #[error("{what} {path}: {source}; choose a writable --input-dir")]
    Layout {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file would be overwritten by the container-side one.
    #[error("{0}")]
    Usage(String),
    /// A channel's object list could not be read.
    #[error("channel '{channel}': {source}")]
    Resolve {
        /// The channel.
        channel: String,
        /// Why (boxed: it is by far the largest cause).
        #[source]
        source: Box<ChannelError>,
    },
    /// A channel could not be brought up in its mode.
    #[error("channel '{channel}' ({mode}): {message}")]
    Setup {
        /// The channel.
        channel: String,
        /// Its input mode.
        mode: InputMode,
        /// What went wrong, one line.
        message: String,
        /// Whether the data source is at fault (exit 3) rather than the input (exit 2)
        /// or the machine (exit 1).
        class: ErrorClass,
    },
    /// The command could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program as given.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot catch SIGINT/SIGTERM/SIGHUP/SIGQUIT: {0}")]
    Signals(#[source] std::io::Error),
    /// A channel stopped delivering while the command ran; the command was stopped.
    #[error(
        "channel '{channel}' ({mode}) failed while the command was running, so the command \
         was stopped rather than left to train on incomplete data: {message}"
    )]
    ChannelFailed {
        /// The channel.
        channel: String,
        /// Its input mode.
        mode: InputMode,
        /// What failed, naming the object.
        message: String,
    },
    /// Checkpoints could not be restored before the command, or synced after it.
    #[error("checkpoints: {0}")]
    Checkpoints(#[source] chute_upload::UploadError),
    /// The model or output data could not be uploaded after a successful command.
    #[error("the command succeeded but its outputs were not saved: {0}")]
    Upload(#[source] chute_upload::UploadError),
    /// A signal arrived before the command started.
    #[error("interrupted by signal {0} while bringing channels up; the command was not started and the channels already up were torn down")]
    Interrupted(i32),
}

impl Classify for RunError {
    /// A command that cannot be started or a signal is the machine's (their exit
    /// codes are the shell's: see [`RunError::exit_code`]).
    fn class(&self) -> ErrorClass {
        match self {
            RunError::Config(_)
            | RunError::Hosts(_)
            | RunError::ResourceConfig { .. }
            | RunError::Layout { .. }
            | RunError::Usage(_) => ErrorClass::Usage,
            RunError::Resolve { source, .. } => source.class(),
            RunError::Setup { class, .. } => *class,
            RunError::ChannelFailed { .. } => ErrorClass::Source,
            RunError::Checkpoints(e) | RunError::Upload(e) => e.class(),
            RunError::Spawn { .. } | RunError::Signals(_) | RunError::Interrupted(_) => {
                ErrorClass::Local
            }
        }
    }
}

impl RunError {
    /// The process exit code for this error: its class's, except for a command
    /// that cannot be run (127 / 126, as shells report it) and a signal (128 + it).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Spawn { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            },
            RunError::Interrupted(sig) => 128u8.saturating_add(*sig as u8),
            other => other.class().exit_code(),
        }
    }
}
