//! Listing a prefix completely, fast.
//!
//! A ListObjectsV2 page holds at most 1,000 keys and each page needs the token of
//! the one before, so a plain listing of a large prefix is a chain of round trips.
//! Datasets are usually laid out in sub-prefixes (`train/00/`, `train/01/`, ...), so
//! the listing first asks with the delimiter `/` for the first `fanout_depth` levels
//! and then lists every sub-prefix found there as its own chain, many chains at a
//! time. The result is merged back into one bytewise-sorted list, the same list a
//! serial listing gives.
//!
//! Every continuation token of a chain is remembered: a server whose tokens
//! cycle (A, B, A, B, ...) would otherwise be listed forever.

use std::collections::{HashSet, VecDeque};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::read::with_retries;
use crate::stats::Stats;
use crate::{ObjectMeta, ObjectStore, RetryPolicy, StoreError};

#[derive(Debug, Clone)]
pub struct ListOptions {
    /// Sub-prefix chains listed at the same time.
    pub concurrency: usize,
    /// Levels of `/` below the prefix that are split into separate chains; 0 lists
    /// serially.
    pub fanout_depth: usize,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            concurrency: 32,
            fanout_depth: 2,
        }
    }
}

/// Everything under one prefix, following every page.
async fn list_chain(
    store: &dyn ObjectStore,
    policy: &RetryPolicy,
    stats: &Stats,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
) -> Result<(Vec<ObjectMeta>, Vec<String>), StoreError> {
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    let mut token: Option<String> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let page = with_retries(policy, stats, bucket, prefix, || {
            Stats::add(&stats.list_requests, 1);
            store.list_page(bucket, prefix, delimiter, token.clone())
        })
        .await?;
        objects.extend(page.objects);
        prefixes.extend(page.common_prefixes);
        match page.next_token {
            Some(t) if seen.insert(t.clone()) => token = Some(t),
            Some(t) => {
                return Err(StoreError::other(
                    bucket,
                    prefix,
                    format!(
                        "the listing of this prefix returned continuation token {t:?} a second time \
                         (after {} pages): the server's pagination loops, so the listing cannot end",
                        seen.len() + 1
                    ),
                ))
            }
            None => break,
        }
    }
    Ok((objects, prefixes))
}

pub(crate) async fn list_all(
    store: &dyn ObjectStore,
    policy: &RetryPolicy,
    stats: &Stats,
    bucket: &str,
    prefix: &str,
    opts: &ListOptions,
) -> Result<Vec<ObjectMeta>, StoreError> {
    let concurrency = opts.concurrency.max(1);
    let mut objects = Vec::new();
    // (prefix, depth) still to list; depth < fanout_depth lists with the delimiter.
    let mut queue: VecDeque<(String, usize)> = VecDeque::from([(prefix.to_owned(), 0)]);
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < concurrency {
            let Some((p, depth)) = queue.pop_front() else {
                break;
            };
            let delimiter = (depth < opts.fanout_depth).then_some("/");
            running.push(async move {
                let res = list_chain(store, policy, stats, bucket, &p, delimiter).await;
                (res, depth)
            });
        }
        let Some((res, depth)) = running.next().await else {
            break;
        };
        let (found, sub) = res?;
        objects.extend(found);
        queue.extend(sub.into_iter().map(|p| (p, depth + 1)));
    }
    objects.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    // A store may list a key twice across fan-out boundaries; keep one.
    objects.dedup_by(|a, b| a.key == b.key);
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::{GetResponse, ListPage};

    /// A store whose listing never ends: each page points to the next token of
    /// `cycle`, wrapping around.
    struct Cycling {
        cycle: Vec<&'static str>,
        pages: AtomicU64,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Cycling {
        async fn list_page(
            &self,
            _bucket: &str,
            prefix: &str,
            _delimiter: Option<&str>,
            token: Option<String>,
        ) -> Result<ListPage, StoreError> {
            let n = self.pages.fetch_add(1, Ordering::SeqCst);
            if n > 1000 {
                // Far past where the loop must have been caught.
                return Err(StoreError::other("b", prefix, "listed forever"));
            }
            let at = match token {
                None => 0,
                Some(t) => self.cycle.iter().position(|c| *c == t).map_or(0, |i| i + 1),
            };
            Ok(ListPage {
                objects: vec![ObjectMeta {
                    key: format!("{prefix}k{n}"),
                    size: 1,
                    etag: None,
                }],
                common_prefixes: Vec::new(),
                next_token: Some(self.cycle[at % self.cycle.len()].to_owned()),
            })
        }

        async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
            Err(StoreError::other(bucket, key, "unused"))
        }

        async fn get_range(
            &self,
            bucket: &str,
            key: &str,
            _range: Range<u64>,
            _if_match: Option<&str>,
        ) -> Result<GetResponse, StoreError> {
            Err(StoreError::other(bucket, key, "unused"))
        }

        fn describe(&self) -> String {
            "cycling".into()
        }
    }

    #[tokio::test]
    async fn alternating_tokens_are_an_error_naming_the_prefix() {
        for cycle in [vec!["A", "B"], vec!["A"], vec!["x", "y", "z"]] {
            let store = Cycling {
                cycle: cycle.clone(),
                pages: AtomicU64::new(0),
            };
            let opts = ListOptions {
                concurrency: 1,
                fanout_depth: 0,
            };
            let err = list_all(
                &store,
                &RetryPolicy::default(),
                &Stats::default(),
                "bucket",
                "train/",
                &opts,
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with(
                    "s3://bucket/train/: the listing of this prefix returned continuation token"
                ) && err.contains(&format!("{:?}", cycle[0]))
                    && err.contains("loops"),
                "{err}"
            );
            assert_eq!(
                store.pages.load(Ordering::SeqCst),
                cycle.len() as u64 + 1,
                "one page per token, then the repeat is caught"
            );
        }
    }
}
