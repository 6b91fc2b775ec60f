//! S3 Express One Zone directory buckets (`NAME--AZID--x-s3`): what chute does
//! differently for them.
//!
//! - ListObjectsV2 on a directory bucket accepts only prefixes that end in the
//!   delimiter `/`. A channel prefix may end in a partial name (`train/part-`),
//!   so the listing asks for the prefix up to its last `/` and keeps the keys
//!   (and common prefixes) that start with the whole prefix.
//! - Listings of directory buckets are not in key order; chute sorts every
//!   listing itself (`list.rs`), so plans do not depend on it.
//! - Authentication is per session (CreateSession): the SDK does it on its own
//!   for any bucket name with the `--x-s3` suffix, with the credentials chute
//!   configured. Nothing to do here.

/// Whether `bucket` names a directory bucket (S3 Express One Zone).
pub fn is_directory_bucket(bucket: &str) -> bool {
    bucket.ends_with("--x-s3")
}

/// What to send as the ListObjectsV2 prefix for `prefix`, and the prefix every
/// returned key must still start with (`None`: all of them).
pub fn listing_prefix<'a>(bucket: &str, prefix: &'a str) -> (&'a str, Option<&'a str>) {
    if !is_directory_bucket(bucket) || prefix.is_empty() || prefix.ends_with('/') {
        return (prefix, None);
    }
    let parent = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
    (parent, Some(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_buckets_are_recognised() {
        assert!(is_directory_bucket("train-data--usw2-az1--x-s3"));
        assert!(!is_directory_bucket("train-data"));
        assert!(!is_directory_bucket("x-s3"));
    }

    #[test]
    fn directory_bucket_listings_ask_for_whole_directories() {
        let dir = "ds--use1-az4--x-s3";
        // Already a directory, or the whole bucket: asked as is.
        assert_eq!(listing_prefix(dir, "train/"), ("train/", None));
        assert_eq!(listing_prefix(dir, ""), ("", None));
        // A partial name: its directory is listed, keys filtered by the prefix.
        assert_eq!(
            listing_prefix(dir, "train/part-"),
            ("train/", Some("train/part-"))
        );
        assert_eq!(listing_prefix(dir, "train"), ("", Some("train")));
        // General purpose buckets accept any prefix.
        assert_eq!(listing_prefix("ds", "train/part-"), ("train/part-", None));
    }
}
