//! Listing a prefix completely, fast.
//!
//! A ListObjectsV2 page holds at most 1,000 keys and each page needs the token of
//! the one before, so a plain listing of a large prefix is a chain of round trips.
//! Datasets are usually laid out in sub-prefixes (`train/00/`, `train/01/`, ...), so
//! the listing first asks with the delimiter `/` for the first `fanout_depth` levels
//! and then lists every sub-prefix found there as its own chain, many chains at a
//! time. The result is merged back into one bytewise-sorted list, the same list a
//! serial listing gives.

use std::collections::VecDeque;

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
    loop {
        let page = with_retries(policy, stats, bucket, prefix, || {
            Stats::add(&stats.list_requests, 1);
            store.list_page(bucket, prefix, delimiter, token.clone())
        })
        .await?;
        objects.extend(page.objects);
        prefixes.extend(page.common_prefixes);
        match page.next_token {
            Some(t) if Some(&t) != token.as_ref() => token = Some(t),
            Some(_) => {
                return Err(StoreError::other(
                    bucket,
                    prefix,
                    "the listing returned the same continuation token twice",
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
