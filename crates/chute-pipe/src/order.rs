//! What one epoch streams, in which order: the items of this host's part of the
//! channel, after the per-epoch shuffle when there is a seed.
//!
//! - Objects: without a seed, the plan order after `ShardedByS3Key` (applied once);
//!   with a seed, `chute_plan::shuffle_then_shard` of the whole list for
//!   (seed, epoch), as doc/SEMANTICS.md specifies.
//! - Augmented manifests: one item per requested attribute of each line, lines in
//!   file order. Sharding and shuffling act on whole lines; a line's position in
//!   the file stands in for an object key (line `i` belongs to shard `i mod N`).

use std::sync::Arc;

use bytes::Bytes;
use chute_plan::{shuffle_then_shard, AugmentedField, AugmentedRecord, Plan, Shard};

/// One record of the stream: an object's bytes or an inline value.
#[derive(Debug)]
pub(crate) struct Item {
    /// For messages: `s3://bucket/key`, or `line N attribute A`.
    pub label: String,
    pub source: ItemSource,
}

#[derive(Debug)]
pub(crate) enum ItemSource {
    Object {
        bucket: String,
        key: String,
        /// `None` for augmented-manifest references, sized when fetched.
        size: Option<u64>,
        etag: Option<String>,
    },
    Inline(Bytes),
}

/// The channel's items and how they are ordered per epoch.
pub(crate) enum Order {
    Objects {
        objects: Vec<Arc<Item>>,
        seed: Option<u64>,
        shard: Option<Shard>,
    },
    Lines {
        lines: Vec<Vec<Arc<Item>>>,
        seed: Option<u64>,
        shard: Option<Shard>,
    },
}

fn object_item(bucket: &str, key: &str, size: Option<u64>, etag: Option<String>) -> Item {
    Item {
        label: format!("s3://{bucket}/{key}"),
        source: ItemSource::Object {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size,
            etag,
        },
    }
}

/// Keys that sort bytewise in line order, so `ShardedByS3Key`'s rule
/// (sorted position mod N) becomes line position mod N.
fn line_key(index: usize) -> String {
    format!("{index:020}")
}

impl Order {
    pub fn objects(plan: Plan, seed: Option<u64>, shard: Option<Shard>) -> Order {
        // Without a seed the shard never changes: take it once, here.
        let (plan, shard) = match (seed, shard) {
            (None, Some(s)) => (plan.shard(&s), None),
            (_, s) => (plan, s),
        };
        let objects = plan
            .objects
            .into_iter()
            .map(|o| {
                Arc::new(object_item(
                    o.bucket(),
                    o.key(),
                    Some(o.size),
                    o.etag().map(|e| e.to_string()),
                ))
            })
            .collect();
        Order::Objects {
            objects,
            seed,
            shard,
        }
    }

    pub fn lines(records: Vec<AugmentedRecord>, seed: Option<u64>, shard: Option<Shard>) -> Order {
        let lines: Vec<Vec<Arc<Item>>> = records
            .into_iter()
            .map(|r| {
                r.fields
                    .into_iter()
                    .map(|f| {
                        Arc::new(match f {
                            AugmentedField::Ref { url, .. } => {
                                object_item(&url.bucket, &url.key, None, None)
                            }
                            AugmentedField::Value { attribute, json } => Item {
                                label: format!("line {} attribute {attribute}", r.line),
                                source: ItemSource::Inline(Bytes::from(json)),
                            },
                        })
                    })
                    .collect()
            })
            .collect();
        let (lines, shard) = match (seed, shard) {
            (None, Some(s)) => {
                let keep: Vec<Vec<Arc<Item>>> =
                    shuffle_then_shard(index_lines(lines), |l| &l.0, None, 0, Some(&s))
                        .into_iter()
                        .map(|l| l.1)
                        .collect();
                (keep, None)
            }
            (_, s) => (lines, s),
        };
        Order::Lines { lines, seed, shard }
    }

    /// The items of `epoch`, in stream order.
    pub fn epoch(&self, epoch: u64) -> Vec<Arc<Item>> {
        match self {
            Order::Objects {
                objects,
                seed,
                shard,
            } => match seed {
                None => objects.clone(),
                Some(_) => shuffle_then_shard(
                    objects.clone(),
                    |o| match &o.source {
                        ItemSource::Object { key, .. } => key.as_str(),
                        ItemSource::Inline(_) => "",
                    },
                    *seed,
                    epoch,
                    shard.as_ref(),
                ),
            },
            Order::Lines { lines, seed, shard } => match seed {
                None => lines.iter().flatten().cloned().collect(),
                Some(_) => shuffle_then_shard(
                    index_lines(lines.clone()),
                    |l| &l.0,
                    *seed,
                    epoch,
                    shard.as_ref(),
                )
                .into_iter()
                .flat_map(|l| l.1)
                .collect(),
            },
        }
    }
}

fn index_lines(lines: Vec<Vec<Arc<Item>>>) -> Vec<(String, Vec<Arc<Item>>)> {
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (line_key(i), l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chute_plan::{ObjectInfo, S3Url};

    fn plan(n: usize) -> Plan {
        chute_plan::plan_from_listing(
            "",
            (0..n)
                .map(|i| ObjectInfo {
                    bucket: "b".into(),
                    key: format!("k{i:03}"),
                    size: i as u64,
                    etag: None,
                })
                .collect(),
        )
    }

    fn labels(items: &[Arc<Item>]) -> Vec<String> {
        items.iter().map(|i| i.label.clone()).collect()
    }

    #[test]
    fn unseeded_objects_keep_plan_order_and_shard_once() {
        let all = Order::objects(plan(7), None, None);
        assert_eq!(labels(&all.epoch(0)), labels(&all.epoch(3)));
        assert_eq!(all.epoch(0)[2].label, "s3://b/k002");
        let s1 = Order::objects(plan(7), None, Some(Shard { index: 1, count: 3 }));
        assert_eq!(
            labels(&s1.epoch(5)),
            ["s3://b/k001", "s3://b/k004"].map(String::from)
        );
    }

    #[test]
    fn seeded_shards_partition_each_epoch() {
        for epoch in 0..3 {
            let mut union: Vec<String> = (0..3)
                .flat_map(|i| {
                    labels(
                        &Order::objects(plan(10), Some(9), Some(Shard { index: i, count: 3 }))
                            .epoch(epoch),
                    )
                })
                .collect();
            union.sort();
            assert_eq!(
                union,
                labels(&Order::objects(plan(10), None, None).epoch(0))
            );
        }
        let o = Order::objects(plan(10), Some(9), None);
        assert_ne!(labels(&o.epoch(0)), labels(&o.epoch(1)));
        assert_eq!(
            labels(&o.epoch(1)),
            labels(&Order::objects(plan(10), Some(9), None).epoch(1))
        );
    }

    #[test]
    fn augmented_lines_stay_together() {
        let records: Vec<AugmentedRecord> = (1..=5)
            .map(|line| AugmentedRecord {
                line,
                fields: vec![
                    AugmentedField::Ref {
                        attribute: "source-ref".into(),
                        url: S3Url {
                            bucket: "b".into(),
                            key: format!("img{line}"),
                        },
                    },
                    AugmentedField::Value {
                        attribute: "label".into(),
                        json: line.to_string(),
                    },
                ],
            })
            .collect();
        let o = Order::lines(records.clone(), None, Some(Shard { index: 1, count: 2 }));
        assert_eq!(
            labels(&o.epoch(0)),
            [
                "s3://b/img2",
                "line 2 attribute label",
                "s3://b/img4",
                "line 4 attribute label"
            ]
            .map(String::from)
        );
        let o = Order::lines(records, Some(4), None);
        let items = o.epoch(2);
        assert_eq!(items.len(), 10);
        for pair in items.chunks(2) {
            let n = pair[0].label.trim_start_matches("s3://b/img");
            assert_eq!(pair[1].label, format!("line {n} attribute label"));
        }
    }
}
