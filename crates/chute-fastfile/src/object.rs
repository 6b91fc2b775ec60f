//! The objects of the mount, by plan position (which is also the listing
//! order): the plan's own compact entries (shared bucket, boxed key, compact
//! ETag; see `chute_plan::PlannedObject`), held once behind an `Arc`, plus
//! the one thing the read path adds per object, a stale flag. Nothing is
//! copied per object; logs name an object by its `s3://bucket/key`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chute_plan::{ETag, PlannedObject};

use crate::cache::BLOCK;

/// One object, as the read path sees it (a view into [`Objects`]).
#[derive(Clone, Copy)]
pub(crate) struct ObjectRef<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub etag: Option<&'a ETag>,
    pub size: u64,
    /// Set once the object was found changed, so the log names it once.
    pub stale: &'a AtomicBool,
}

impl ObjectRef<'_> {
    pub fn block_len(&self, index: u64) -> u64 {
        let start = index * BLOCK;
        self.size.saturating_sub(start).min(BLOCK)
    }

    /// The ETag exactly as listed, for `If-Match`.
    pub fn etag_string(&self) -> Option<String> {
        self.etag.map(|e| e.to_string())
    }

    /// `s3://bucket/key`, for logs.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

pub(crate) struct Objects {
    plan: Arc<Vec<PlannedObject>>,
    stale: Vec<AtomicBool>,
}

impl Objects {
    pub fn from_plan(objects: Vec<PlannedObject>) -> Objects {
        let stale = (0..objects.len()).map(|_| AtomicBool::new(false)).collect();
        Objects {
            plan: Arc::new(objects),
            stale,
        }
    }

    /// The plan's objects, to share rather than copy.
    #[allow(dead_code)]
    pub fn plan(&self) -> &Arc<Vec<PlannedObject>> {
        &self.plan
    }

    pub fn get(&self, i: u32) -> Option<ObjectRef<'_>> {
        let p = self.plan.get(i as usize)?;
        let stale = self.stale.get(i as usize)?;
        Some(ObjectRef {
            bucket: p.bucket(),
            key: p.key(),
            etag: p.etag(),
            size: p.size,
            stale,
        })
    }

    /// Every object with its index, in plan order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, ObjectRef<'_>)> {
        (0..self.plan.len())
            .map_while(|i| u32::try_from(i).ok())
            .filter_map(|i| self.get(i).map(|o| (i, o)))
    }

    pub fn len(&self) -> usize {
        self.plan.len()
    }

    pub fn total_bytes(&self) -> u64 {
        self.plan.iter().fold(0, |s, o| s.saturating_add(o.size))
    }
}
