//! The channel plan: which objects a channel exposes, at which relative paths, which
//! empty directories it has, and which keys were left out and why.
//!
//! Every delivery mode starts from a plan, so the key-to-path rules (see
//! [`crate::path`]) and the conflict rules below are applied once, here:
//! - a path that is both a file and a directory (`a` and `a/b`, or `a` and the
//!   folder marker `a/`): the directory wins, the file is skipped as shadowed;
//! - a path that appears twice (possible with manifests): the first one is kept.
//!
//! Objects stay in input order, which for a listing is S3's bytewise key order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::etag::ETag;
use crate::path::{check_rel_path, relative_key, PathKind, SkipReason};
use crate::shard::{shard_indices, Shard};

/// One object as listed (or as named by a manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Bucket.
    pub bucket: String,
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag as listed, to detect objects that change under a reader.
    pub etag: Option<String>,
}

/// An object the channel exposes.
///
/// A plan holds one of these per object for as long as a mount lives (10M objects
/// are ordinary), so it is kept small: the bucket is shared between objects, the
/// relative path is a suffix of the key wherever it can be (it is for every listed
/// object), and the ETag is stored in its compact form (see [`ETag`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "PlannedObjectFields", from = "PlannedObjectFields")]
pub struct PlannedObject {
    bucket: Arc<str>,
    key: Box<str>,
    /// Size in bytes.
    pub size: u64,
    etag: Option<ETag>,
    path: RelPath,
}

/// Where an object's relative path is kept.
#[derive(Clone, PartialEq, Eq)]
enum RelPath {
    /// The key from this byte on.
    InKey(u32),
    /// A path that is not a suffix of the key (manifests may map any way).
    Own(Box<str>),
}

impl PlannedObject {
    /// An object of `bucket` (clone one `Arc` for all the objects of a bucket)
    /// exposed at the relative path `path`.
    pub fn new(
        bucket: Arc<str>,
        key: impl Into<Box<str>>,
        size: u64,
        etag: Option<ETag>,
        path: &str,
    ) -> PlannedObject {
        let key = key.into();
        let path = match key.len().checked_sub(path.len()) {
            Some(at) if key.ends_with(path) => match u32::try_from(at) {
                Ok(at) => RelPath::InKey(at),
                Err(_) => RelPath::Own(path.into()),
            },
            _ => RelPath::Own(path.into()),
        };
        PlannedObject {
            bucket,
            key,
            size,
            etag,
            path,
        }
    }

    /// Bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The bucket, shared: cloning it allocates nothing.
    pub fn bucket_arc(&self) -> &Arc<str> {
        &self.bucket
    }

    /// Full key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// ETag as listed, to detect objects that change under a reader.
    pub fn etag(&self) -> Option<&ETag> {
        self.etag.as_ref()
    }

    /// The parts of the object, moved out (nothing is copied): bucket, key, size
    /// and ETag. The path is dropped; take it first if it is needed.
    pub fn into_parts(self) -> (Arc<str>, Box<str>, u64, Option<ETag>) {
        (self.bucket, self.key, self.size, self.etag)
    }

    /// Safe relative path under the channel root, `/`-separated.
    pub fn path(&self) -> &str {
        match &self.path {
            RelPath::InKey(at) => self.key.get(*at as usize..).unwrap_or_default(),
            RelPath::Own(path) => path,
        }
    }
}

impl std::fmt::Debug for PlannedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedObject")
            .field("bucket", &self.bucket())
            .field("key", &self.key())
            .field("size", &self.size)
            .field("etag", &self.etag)
            .field("path", &self.path())
            .finish()
    }
}

/// The serialized shape of a [`PlannedObject`]: every field spelled out.
#[derive(Serialize, Deserialize)]
struct PlannedObjectFields {
    bucket: String,
    key: String,
    size: u64,
    etag: Option<ETag>,
    path: String,
}

impl From<PlannedObject> for PlannedObjectFields {
    fn from(o: PlannedObject) -> Self {
        PlannedObjectFields {
            bucket: o.bucket().to_owned(),
            path: o.path().to_owned(),
            key: o.key.into(),
            size: o.size,
            etag: o.etag,
        }
    }
}

impl From<PlannedObjectFields> for PlannedObject {
    fn from(f: PlannedObjectFields) -> Self {
        PlannedObject::new(f.bucket.into(), f.key, f.size, f.etag, &f.path)
    }
}

/// A key left out of the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The full key.
    pub key: String,
    /// Why.
    pub reason: SkipReason,
}

/// What one channel (or one host's shard of it) contains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Objects in plan order.
    pub objects: Vec<PlannedObject>,
    /// Directories from folder markers that hold nothing else, sorted bytewise,
    /// relative, without a trailing `/`. Directories that contain an object are
    /// implied by its path and not repeated here.
    pub dirs: Vec<String>,
    /// Keys left out, in input order.
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// Sum of the sizes of the planned objects (saturating, never panics).
    pub fn total_bytes(&self) -> u64 {
        self.objects
            .iter()
            .fold(0u64, |sum, o| sum.saturating_add(o.size))
    }

    /// Keeps only the objects of `shard` (see [`crate::shard`]), in plan order.
    ///
    /// Directories and skipped keys are kept whole: every host then has the same
    /// directory skeleton and reports the same warnings.
    pub fn shard(self, shard: &Shard) -> Plan {
        let mut keep = vec![false; self.objects.len()];
        {
            let keys: Vec<&str> = self.objects.iter().map(PlannedObject::key).collect();
            for i in shard_indices(&keys, shard) {
                keep[i] = true;
            }
        }
        let objects = self
            .objects
            .into_iter()
            .zip(keep)
            .filter_map(|(object, keep)| keep.then_some(object))
            .collect();
        Plan {
            objects,
            dirs: self.dirs,
            skipped: self.skipped,
        }
    }
}

/// Builds the plan for a listing of `prefix` (keys in listing order).
///
/// Keys not under the prefix are skipped as [`SkipReason::OutsidePrefix`]; the root
/// marker (the key equal to a `/`-terminated prefix) is ignored.
pub fn plan_from_listing(prefix: &str, objects: Vec<ObjectInfo>) -> Plan {
    let slots = objects
        .into_iter()
        .map(|info| match relative_key(prefix, &info.key) {
            Some(rel) => {
                let at = info.key.len() - rel.len();
                classify(info, Rel::InKey(at))
            }
            None => Slot::Skip(Skipped {
                key: info.key,
                reason: SkipReason::OutsidePrefix,
            }),
        })
        .collect();
    resolve(slots)
}

/// Builds the plan for objects whose relative paths are already known (manifests).
/// The paths are checked like listed keys; a trailing `/` makes a directory.
pub fn plan_from_entries(entries: Vec<(ObjectInfo, String)>) -> Plan {
    let slots = entries
        .into_iter()
        .map(|(info, rel)| classify(info, Rel::Own(rel)))
        .collect();
    resolve(slots)
}

struct Candidate {
    info: ObjectInfo,
    rel: Rel,
    kind: PathKind,
}

/// The relative path as given (a directory keeps its trailing `/`); a listed
/// key's is a suffix of the key, and is not copied.
enum Rel {
    InKey(usize),
    Own(String),
}

impl Candidate {
    fn rel(&self) -> &str {
        match &self.rel {
            Rel::InKey(at) => self.info.key.get(*at..).unwrap_or_default(),
            Rel::Own(rel) => rel,
        }
    }

    /// The path without a folder marker's trailing `/`.
    fn path(&self) -> &str {
        let rel = self.rel();
        match self.kind {
            PathKind::Dir => rel.strip_suffix('/').unwrap_or(rel),
            PathKind::File => rel,
        }
    }
}

enum Slot {
    Keep(Candidate),
    Skip(Skipped),
}

fn classify(info: ObjectInfo, rel: Rel) -> Slot {
    let checked = match &rel {
        Rel::InKey(at) => check_rel_path(info.key.get(*at..).unwrap_or_default()),
        Rel::Own(rel) => check_rel_path(rel),
    };
    match checked {
        Ok(kind) => Slot::Keep(Candidate { info, rel, kind }),
        Err(reason) => Slot::Skip(Skipped {
            key: info.key,
            reason,
        }),
    }
}

enum Decision {
    File,
    /// A folder marker; `empty` when nothing else lies under it.
    Dir {
        empty: bool,
    },
    Skip(SkipReason),
    /// The root marker: nothing to create, nothing to report.
    Ignore,
}

fn resolve(slots: Vec<Slot>) -> Plan {
    let decisions = decide(&slots);
    let mut plan = Plan::default();
    // Objects of one bucket share one copy of its name.
    let mut bucket: Option<Arc<str>> = None;
    for (slot, decision) in slots.into_iter().zip(decisions) {
        match (slot, decision) {
            (Slot::Skip(skipped), _) => plan.skipped.push(skipped),
            (Slot::Keep(c), Decision::File) => {
                let shared = match &bucket {
                    Some(b) if **b == *c.info.bucket => b.clone(),
                    _ => bucket.insert(Arc::from(c.info.bucket.as_str())).clone(),
                };
                plan.objects.push(planned(shared, c));
            }
            (Slot::Keep(c), Decision::Dir { empty }) => {
                if empty {
                    plan.dirs.push(c.path().to_owned());
                }
            }
            (Slot::Keep(c), Decision::Skip(reason)) => plan.skipped.push(Skipped {
                key: c.info.key,
                reason,
            }),
            (Slot::Keep(_), Decision::Ignore) => {}
        }
    }
    plan.dirs.sort_unstable();
    plan
}

fn planned(bucket: Arc<str>, c: Candidate) -> PlannedObject {
    let Candidate { info, rel, .. } = c;
    let etag = info.etag.map(ETag::from);
    match rel {
        Rel::InKey(at) => match u32::try_from(at) {
            Ok(at) => PlannedObject {
                bucket,
                key: info.key.into_boxed_str(),
                size: info.size,
                etag,
                path: RelPath::InKey(at),
            },
            Err(_) => {
                let path = info.key.get(at..).unwrap_or_default().to_owned();
                PlannedObject::new(bucket, info.key, info.size, etag, &path)
            }
        },
        Rel::Own(path) => PlannedObject::new(bucket, info.key, info.size, etag, &path),
    }
}

/// Decides the fate of every slot. Linear in the total length of the paths: each
/// directory prefix is hashed once per path at most, and usually far less (see the
/// early exit below).
fn decide(slots: &[Slot]) -> Vec<Decision> {
    // Every proper ancestor directory of every candidate path, mapped to the slot
    // of one candidate beneath it (to name it in a Shadowed reason).
    let mut ancestors: HashMap<&str, usize> = HashMap::new();
    // Folder-marker paths, mapped to the first slot naming them.
    let mut markers: HashMap<&str, usize> = HashMap::new();

    for (i, slot) in slots.iter().enumerate() {
        let Slot::Keep(c) = slot else { continue };
        let path = c.path();
        if path.is_empty() {
            continue;
        }
        if c.kind == PathKind::Dir {
            markers.entry(path).or_insert(i);
        }
        // Walk from the deepest ancestor up. Whoever inserted an ancestor also
        // inserted all of its own ancestors, so the first one already present
        // ends the walk.
        let mut rest = path;
        while let Some(slash) = rest.rfind('/') {
            rest = &rest[..slash];
            if ancestors.contains_key(rest) {
                break;
            }
            ancestors.insert(rest, i);
        }
    }

    let mut seen_files: HashSet<&str> = HashSet::new();
    let mut seen_dirs: HashSet<&str> = HashSet::new();
    slots
        .iter()
        .map(|slot| {
            let Slot::Keep(c) = slot else {
                // The slot carries its own reason; this value is not used.
                return Decision::Ignore;
            };
            let path = c.path();
            match c.kind {
                PathKind::Dir if path.is_empty() => Decision::Ignore,
                PathKind::Dir => {
                    if seen_dirs.insert(path) {
                        Decision::Dir {
                            empty: !ancestors.contains_key(path),
                        }
                    } else {
                        Decision::Skip(SkipReason::Duplicate)
                    }
                }
                PathKind::File => {
                    if let Some(by) = shadowing_path(slots, &ancestors, &markers, path) {
                        Decision::Skip(SkipReason::Shadowed { by })
                    } else if seen_files.insert(path) {
                        Decision::File
                    } else {
                        Decision::Skip(SkipReason::Duplicate)
                    }
                }
            }
        })
        .collect()
}

/// If `path` is also a directory, a path under it that survives planning.
fn shadowing_path(
    slots: &[Slot],
    ancestors: &HashMap<&str, usize>,
    markers: &HashMap<&str, usize>,
    path: &str,
) -> Option<String> {
    let mut at = match ancestors.get(path) {
        Some(&at) => at,
        None => {
            let &at = markers.get(path)?;
            return match &slots[at] {
                Slot::Keep(marker) => Some(marker.rel().to_owned()),
                Slot::Skip(_) => None,
            };
        }
    };
    // The candidate recorded under `path` may itself be a shadowed file; follow
    // the chain down (each step is strictly longer, so it ends) to one that stays.
    loop {
        let Slot::Keep(c) = &slots[at] else {
            return None;
        };
        if c.kind == PathKind::File {
            if let Some(&deeper) = ancestors.get(c.path()) {
                at = deeper;
                continue;
            }
            if let Some(&marker) = markers.get(c.path()) {
                at = marker;
                continue;
            }
        }
        return Some(c.rel().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            bucket: "b".into(),
            key: key.into(),
            size,
            etag: Some(format!("\"{size}\"")),
        }
    }

    fn listing(prefix: &str, keys: &[&str]) -> Plan {
        plan_from_listing(
            prefix,
            keys.iter()
                .enumerate()
                .map(|(i, k)| obj(k, i as u64))
                .collect(),
        )
    }

    fn paths(plan: &Plan) -> Vec<&str> {
        plan.objects.iter().map(PlannedObject::path).collect()
    }

    fn skipped(plan: &Plan) -> Vec<(&str, SkipReason)> {
        plan.skipped
            .iter()
            .map(|s| (s.key.as_str(), s.reason.clone()))
            .collect()
    }

    #[test]
    fn maps_keys_to_paths() {
        let plan = listing("data/", &["data/", "data/a.bin", "data/sub/b.bin"]);
        assert_eq!(paths(&plan), ["a.bin", "sub/b.bin"]);
        assert!(plan.dirs.is_empty());
        assert!(plan.skipped.is_empty());
        let o = &plan.objects[1];
        assert_eq!(
            (o.bucket(), o.key(), o.size, o.etag().map(ETag::as_string)),
            ("b", "data/sub/b.bin", 2, Some("\"2\"".to_owned()))
        );
        assert_eq!(plan.total_bytes(), 3);
    }

    #[test]
    fn objects_are_compact() {
        assert!(std::mem::size_of::<PlannedObject>() <= 80);
        let plan = listing("data/", &["data/a/b.bin", "data/c"]);
        // Listed paths are suffixes of their keys: nothing copied, one bucket.
        assert!(plan
            .objects
            .iter()
            .all(|o| matches!(o.path, RelPath::InKey(_))));
        assert!(Arc::ptr_eq(
            plan.objects[0].bucket_arc(),
            plan.objects[1].bucket_arc()
        ));
        // A manifest path that is not a suffix is kept as given.
        let o = PlannedObject::new("b".into(), "k/x", 1, None, "y/x2");
        assert_eq!((o.key(), o.path()), ("k/x", "y/x2"));
        let o = PlannedObject::new("b".into(), "k/x", 1, None, "x");
        assert!(matches!(o.path, RelPath::InKey(2)));
        let json = serde_json::to_string(&plan).expect("serialize");
        assert!(json.contains("\"path\":\"a/b.bin\""), "{json}");
        assert_eq!(serde_json::from_str::<Plan>(&json).expect("parse"), plan);
    }

    #[test]
    fn partial_name_prefix() {
        let plan = listing("data/tr", &["data/train/x", "data/trial", "data/tr/y"]);
        assert_eq!(paths(&plan), ["train/x", "trial", "tr/y"]);
    }

    #[test]
    fn unsafe_keys_are_skipped_not_escaped() {
        let plan = listing(
            "p/",
            &[
                "p/../x", "p/a//b", "p/./c", "p/a/./b", "p/ok", "p//abs", "p/n\0ul", "q/x",
            ],
        );
        assert_eq!(paths(&plan), ["ok"]);
        assert_eq!(
            skipped(&plan),
            [
                ("p/../x", SkipReason::DotDotSegment),
                ("p/a//b", SkipReason::EmptySegment),
                ("p/./c", SkipReason::DotSegment),
                ("p/a/./b", SkipReason::DotSegment),
                ("p//abs", SkipReason::EmptySegment),
                ("p/n\0ul", SkipReason::Nul),
                ("q/x", SkipReason::OutsidePrefix),
            ]
        );
    }

    #[test]
    fn folder_markers_become_dirs() {
        let plan = listing(
            "",
            &[
                "empty/",
                "full/",
                "full/x",
                "nested/",
                "nested/deeper/",
                "z/",
            ],
        );
        assert_eq!(paths(&plan), ["full/x"]);
        assert_eq!(plan.dirs, ["empty", "nested/deeper", "z"]);
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn directory_shadows_file_in_either_order() {
        for keys in [["a", "a/b"], ["a/b", "a"]] {
            let plan = listing("", &keys);
            assert_eq!(paths(&plan), ["a/b"]);
            assert_eq!(
                skipped(&plan),
                [("a", SkipReason::Shadowed { by: "a/b".into() })]
            );
        }
        // A folder marker shadows a file of the same name.
        let plan = listing("", &["a", "a/"]);
        assert!(plan.objects.is_empty());
        assert_eq!(plan.dirs, ["a"]);
        assert_eq!(
            skipped(&plan),
            [("a", SkipReason::Shadowed { by: "a/".into() })]
        );
        // Deep chains name a path that survives.
        let plan = listing("", &["a", "a/b", "a/b/c"]);
        assert_eq!(paths(&plan), ["a/b/c"]);
        assert_eq!(
            skipped(&plan),
            [
                ("a", SkipReason::Shadowed { by: "a/b/c".into() }),
                ("a/b", SkipReason::Shadowed { by: "a/b/c".into() }),
            ]
        );
        let plan = listing("", &["a", "a/b", "a/b/"]);
        assert!(plan.objects.is_empty());
        assert_eq!(plan.dirs, ["a/b"]);
        assert_eq!(
            skipped(&plan),
            [
                ("a", SkipReason::Shadowed { by: "a/b/".into() }),
                ("a/b", SkipReason::Shadowed { by: "a/b/".into() }),
            ]
        );
        // Not a prefix in the path sense.
        let plan = listing("", &["a", "ab/c", "a.b"]);
        assert_eq!(paths(&plan), ["a", "ab/c", "a.b"]);
    }

    #[test]
    fn duplicates_keep_the_first() {
        let info = |key: &str, size| ObjectInfo {
            bucket: "b".into(),
            key: key.into(),
            size,
            etag: None,
        };
        let plan = plan_from_entries(vec![
            (info("p/x", 1), "x".into()),
            (info("q/x", 2), "x".into()),
            (info("p/d/", 0), "d/".into()),
            (info("q/d/", 0), "d/".into()),
            (info("p/../e", 0), "../e".into()),
        ]);
        assert_eq!(paths(&plan), ["x"]);
        assert_eq!(plan.objects[0].size, 1);
        assert_eq!(plan.dirs, ["d"]);
        assert_eq!(
            skipped(&plan),
            [
                ("q/x", SkipReason::Duplicate),
                ("q/d/", SkipReason::Duplicate),
                ("p/../e", SkipReason::DotDotSegment),
            ]
        );
    }

    #[test]
    fn shard_keeps_plan_order_and_partitions() {
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("k/{:x}", i * 7919 % 1000))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let plan = listing("k/", &refs);
        let mut seen = HashSet::new();
        for count in 1..=8 {
            seen.clear();
            for index in 0..count {
                let part = plan.clone().shard(&Shard::new(index, count).unwrap());
                let positions: Vec<usize> = part
                    .objects
                    .iter()
                    .map(|o| refs.iter().position(|k| *k == o.key()).unwrap())
                    .collect();
                assert!(positions.windows(2).all(|w| w[0] < w[1]));
                for p in positions {
                    assert!(seen.insert(p));
                }
            }
            assert_eq!(seen.len(), 1000);
        }
    }

    #[test]
    fn large_listing_is_fast_enough() {
        // 200k keys three levels deep plus a shadowing conflict; a quadratic
        // implementation would take minutes.
        let mut keys: Vec<String> = (0..200_000)
            .map(|i| format!("p/{}/{}/{i}.bin", i % 100, i % 1000))
            .collect();
        keys.push("p/5".into());
        let objects = keys.iter().map(|k| obj(k, 1)).collect();
        let start = std::time::Instant::now();
        let plan = plan_from_listing("p/", objects);
        assert_eq!(plan.objects.len(), 200_000);
        assert_eq!(plan.skipped.len(), 1);
        assert!(start.elapsed().as_secs() < 20);
    }
}
