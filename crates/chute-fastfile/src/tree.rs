//! The inode table: the channel plan turned into a directory tree, once, at
//! mount time. Every metadata operation (lookup, getattr, readdir) is answered
//! from here, from memory, so `ls` and `find` never touch S3.
//!
//! A mount may hold ten million objects, so a file costs eight bytes here: its
//! parent, and its slot in its directory's list of children. Its name is not
//! copied: it is the last segment of the object's key, read from the object
//! table the read path keeps anyway ([`Keys`]); only a file whose name is not
//! (a manifest may map a key to any path) has its own copy. Directories, far
//! fewer, keep their names in one string.
//!
//! Inode numbers never change while the file system is mounted and are the same
//! for the same plan: directories first, in order of first use (the root is 1),
//! then one per object in plan order. The tree is immutable, which is what lets
//! the kernel cache entries and attributes for as long as it likes. The children
//! of a directory are one range of a single vector, sorted by name: lookup is a
//! binary search, and a readdir offset is a position in that range, so a call at
//! any offset costs only the entries it returns.

use std::collections::HashMap;
use std::ops::Range;

use chute_plan::{Plan, PlannedObject};

pub(crate) const ROOT: u64 = 1;

/// Where the tree reads file names: the last segment of object `i`'s key is the
/// name of its file.
pub(crate) trait Keys {
    /// The key of object `object`; empty if there is no such object.
    fn key(&self, object: u32) -> &str;
}

impl Keys for [PlannedObject] {
    fn key(&self, object: u32) -> &str {
        self.get(object as usize).map_or("", PlannedObject::key)
    }
}

impl Keys for crate::object::Objects {
    fn key(&self, object: u32) -> &str {
        self.get(object).map_or("", |o| o.key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Dir {
        subdirs: u32,
        /// Children, `.` and `..` not counted.
        entries: u32,
    },
    File {
        /// Index into the plan's objects (also the listing order).
        object: u32,
    },
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub ino: u64,
    pub is_dir: bool,
    pub name: &'a str,
}

#[derive(Debug, Clone, Copy)]
struct Dir {
    /// Inode of the parent; [`NONE`] for a directory that lost its name to a
    /// file listed before it (it has no place in the tree).
    parent: u32,
    name_at: u32,
    name_len: u32,
    /// Its children are `children[first..first + len]`.
    first: u32,
    len: u32,
    subdirs: u32,
}

#[derive(Debug)]
pub(crate) struct Tree {
    /// Directory `d` has inode `d + 1`.
    dir_nodes: Vec<Dir>,
    dir_names: String,
    /// Inode of the directory holding object `i`'s file; [`NONE`] when the
    /// object has no place.
    file_parent: Vec<u32>,
    /// Inodes of the children of every directory, one range per directory.
    children: Vec<u32>,
    /// Files whose name is not the last segment of their key, by object.
    renamed: Vec<(u32, Box<str>)>,
    pub files: u64,
    pub dirs: u64,
}

/// No inode: inodes start at 1.
const NONE: u32 = 0;

impl Tree {
    /// The tree of `plan`; the second value lists paths that could not be
    /// placed (a plan never has them, but a tree must not trust that), in plan
    /// order, objects first: for a name given twice, the first one listed keeps
    /// it, whether file or directory.
    pub fn build(plan: &Plan) -> (Tree, Vec<String>) {
        let objects = plan.objects.as_slice();
        let n = objects.len() as u64;
        // Positions in plan order: object `i` is `i`, directory marker `j` is
        // `n + j`. They decide who keeps a name given twice.
        let mut conflicts: Vec<u64> = Vec::new();
        let mut b = Builder::new();

        // Directories first, created as they are first used, so a parent always
        // comes before its children. Clashes with files are sorted out below.
        let mut file_parent = Vec::with_capacity(objects.len());
        let mut renamed = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            let (dirs, name) = split_path(o.path());
            let parent = match u32::try_from(i) {
                Ok(i) if !name.is_empty() => {
                    if name != last_segment(o.key()) {
                        renamed.push((i, Box::from(name)));
                    }
                    b.dir_path(dirs, u64::from(i))
                }
                _ => NONE,
            };
            if parent == NONE {
                conflicts.push(i as u64);
            }
            file_parent.push(parent);
        }
        let markers: Vec<u32> = (plan.dirs.iter().enumerate())
            .map(|(j, d)| b.dir_path(d, n + j as u64))
            .collect();
        let Builder {
            dirs,
            dir_names,
            created,
            ..
        } = b;

        // Every inode must fit the u32 the tables keep; past that (four billion
        // entries) objects are left out rather than wrapped.
        let first_file = dirs.len() as u64 + 1;
        for (i, p) in file_parent.iter_mut().enumerate() {
            if *p != NONE && first_file + i as u64 > u64::from(u32::MAX) {
                *p = NONE;
                conflicts.push(i as u64);
            }
        }
        let mut tree = Tree {
            dir_nodes: dirs,
            dir_names,
            file_parent,
            children: Vec::new(),
            renamed,
            files: 0,
            dirs: 0,
        };
        tree.lay_out();
        tree.settle_clashes(objects, &created, &mut conflicts);
        tree.compact();

        for (j, &m) in markers.iter().enumerate() {
            if m == NONE || tree.dir_nodes[m as usize - 1].parent == NONE {
                conflicts.push(n + j as u64);
            }
        }
        conflicts.sort_unstable();
        conflicts.dedup();
        let paths = conflicts
            .into_iter()
            .map(|at| match usize::try_from(at) {
                Ok(i) if i < objects.len() => objects[i].path().to_owned(),
                _ => plan.dirs[(at - n) as usize].clone(),
            })
            .collect();
        tree.files = tree.file_parent.iter().filter(|&&p| p != NONE).count() as u64;
        tree.dirs = tree.dir_nodes.iter().filter(|d| d.parent != NONE).count() as u64;
        (tree, paths)
    }

    /// Puts every entry in its directory's range (unsorted).
    fn lay_out(&mut self) {
        let mut count = vec![0u32; self.dir_nodes.len()];
        for dir in &self.dir_nodes[1..] {
            count[dir.parent as usize - 1] += 1;
        }
        for &p in &self.file_parent {
            if p != NONE {
                count[p as usize - 1] += 1;
            }
        }
        let mut at = 0u32;
        for (dir, &c) in self.dir_nodes.iter_mut().zip(&count) {
            dir.first = at;
            dir.len = 0;
            at += c;
        }
        let mut children = vec![NONE; at as usize];
        let mut place = |dirs: &mut [Dir], parent: u32, ino: u32| {
            let d = &mut dirs[parent as usize - 1];
            children[(d.first + d.len) as usize] = ino;
            d.len += 1;
        };
        for k in 1..self.dir_nodes.len() {
            let parent = self.dir_nodes[k].parent;
            place(&mut self.dir_nodes, parent, k as u32 + 1);
        }
        let first_file = self.dir_nodes.len() as u32 + 1;
        for (i, &p) in self.file_parent.iter().enumerate() {
            if p != NONE {
                place(&mut self.dir_nodes, p, first_file + i as u32);
            }
        }
        self.children = children;
    }

    /// Sorts every directory's children by name; where a name is given twice,
    /// the entry first in plan order keeps it and the others lose their place,
    /// with everything under them.
    fn settle_clashes(&mut self, objects: &[PlannedObject], created: &[u64], lost: &mut Vec<u64>) {
        let mut lost_dirs = vec![false; self.dir_nodes.len()];
        let mut children = std::mem::take(&mut self.children);
        let order = |tree: &Tree, ino: u32| match tree.object_of(u64::from(ino)) {
            Some(i) => u64::from(i),
            None => created[ino as usize - 1],
        };
        for k in 0..self.dir_nodes.len() {
            let range = self.range(k);
            let list = &mut children[range];
            list.sort_unstable_by(|&a, &b| {
                (self.name(a, objects).as_bytes())
                    .cmp(self.name(b, objects).as_bytes())
                    .then_with(|| order(self, a).cmp(&order(self, b)))
            });
            for w in 1..list.len() {
                if self.name(list[w], objects) != self.name(list[w - 1], objects) {
                    continue;
                }
                match self.object_of(u64::from(list[w])) {
                    Some(i) => {
                        self.file_parent[i as usize] = NONE;
                        lost.push(u64::from(i));
                    }
                    None => lost_dirs[list[w] as usize - 1] = true,
                }
            }
        }
        self.children = children;
        // Parents come before their children, so one pass carries a loss down.
        for k in 1..self.dir_nodes.len() {
            if lost_dirs[self.dir_nodes[k].parent as usize - 1] {
                lost_dirs[k] = true;
            }
        }
        for (i, p) in self.file_parent.iter_mut().enumerate() {
            if *p != NONE && lost_dirs[*p as usize - 1] {
                *p = NONE;
                lost.push(i as u64);
            }
        }
        for (dir, &l) in self.dir_nodes.iter_mut().zip(&lost_dirs) {
            if l {
                dir.parent = NONE;
            }
        }
    }

    /// Drops the entries that lost their place from the ranges, and counts
    /// each directory's sub-directories.
    fn compact(&mut self) {
        let mut out = 0usize;
        for k in 0..self.dir_nodes.len() {
            let first = out;
            let mut subdirs = 0;
            for r in self.range(k) {
                let ino = self.children[r];
                let (keep, is_dir) = match self.object_of(u64::from(ino)) {
                    Some(i) => (self.file_parent[i as usize] != NONE, false),
                    None => (self.dir_nodes[ino as usize - 1].parent != NONE, true),
                };
                if keep {
                    self.children[out] = ino;
                    out += 1;
                    subdirs += u32::from(is_dir);
                }
            }
            let dir = &mut self.dir_nodes[k];
            dir.first = first as u32;
            dir.len = (out - first) as u32;
            dir.subdirs = subdirs;
        }
        self.children.truncate(out);
        self.children.shrink_to_fit();
    }

    fn range(&self, dir: usize) -> Range<usize> {
        let d = &self.dir_nodes[dir];
        d.first as usize..(d.first + d.len) as usize
    }

    /// The object of a file inode.
    fn object_of(&self, ino: u64) -> Option<u32> {
        let i = ino.checked_sub(self.dir_nodes.len() as u64 + 1)?;
        (i < self.file_parent.len() as u64).then_some(i as u32)
    }

    /// The name of inode `ino`, which must be an entry of some directory.
    fn name<'a, K: Keys + ?Sized>(&'a self, ino: u32, keys: &'a K) -> &'a str {
        match self.object_of(u64::from(ino)) {
            Some(i) => match self.renamed.binary_search_by_key(&i, |r| r.0) {
                Ok(at) => &self.renamed[at].1,
                Err(_) => last_segment(keys.key(i)),
            },
            None => {
                let d = &self.dir_nodes[ino as usize - 1];
                let at = d.name_at as usize;
                self.dir_names
                    .get(at..at + d.name_len as usize)
                    .unwrap_or_default()
            }
        }
    }

    pub fn get(&self, ino: u64) -> Option<NodeKind> {
        if let Some(object) = self.object_of(ino) {
            let placed = self.file_parent[object as usize] != NONE;
            return placed.then_some(NodeKind::File { object });
        }
        let dir = self
            .dir_nodes
            .get(usize::try_from(ino.checked_sub(1)?).ok()?)?;
        (dir.parent != NONE).then_some(NodeKind::Dir {
            subdirs: dir.subdirs,
            entries: dir.len,
        })
    }

    /// The child `name` of directory `parent`.
    pub fn lookup<K: Keys + ?Sized>(&self, parent: u64, name: &[u8], keys: &K) -> Option<u64> {
        let k = self.live_dir(parent)?;
        let list = &self.children[self.range(k)];
        let at = list
            .binary_search_by(|&c| self.name(c, keys).as_bytes().cmp(name))
            .ok()?;
        Some(u64::from(list[at]))
    }

    /// The entries of directory `ino` from position `offset` on (`.` and `..`
    /// first, then the children by name), each with the position after it.
    /// Built one at a time as they are taken: a caller that stops early pays
    /// for no more.
    pub fn entries<'a, K: Keys + ?Sized>(
        &'a self,
        ino: u64,
        offset: u64,
        keys: &'a K,
    ) -> Option<impl Iterator<Item = (u64, Entry<'a>)> + 'a> {
        let k = self.live_dir(ino)?;
        let dir = self.dir_nodes[k];
        let list = &self.children[self.range(k)];
        let end = list.len() as u64 + 2;
        Some((offset.min(end)..end).map(move |pos| {
            let entry = match pos {
                0 => Entry {
                    ino,
                    is_dir: true,
                    name: ".",
                },
                1 => Entry {
                    ino: u64::from(dir.parent),
                    is_dir: true,
                    name: "..",
                },
                _ => {
                    let child = list[(pos - 2) as usize];
                    Entry {
                        ino: u64::from(child),
                        is_dir: self.object_of(u64::from(child)).is_none(),
                        name: self.name(child, keys),
                    }
                }
            };
            (pos + 1, entry)
        }))
    }

    fn live_dir(&self, ino: u64) -> Option<usize> {
        let k = usize::try_from(ino.checked_sub(1)?).ok()?;
        (self.dir_nodes.get(k)?.parent != NONE).then_some(k)
    }

    /// Inode numbers in use (some may be holes: entries that lost their place).
    pub fn len(&self) -> u64 {
        (self.dir_nodes.len() + self.file_parent.len()) as u64
    }

    /// Heap bytes the table holds, for the scale figures.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.dir_nodes.capacity() * size_of::<Dir>()
            + self.dir_names.capacity()
            + self.file_parent.capacity() * 4
            + self.children.capacity() * 4
            + self.renamed.capacity() * size_of::<(u32, Box<str>)>()
            + self.renamed.iter().map(|r| r.1.len()).sum::<usize>()
    }
}

/// A path's directory part and its last segment; empty segments are skipped.
fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => ("", path),
    }
}

fn last_segment(key: &str) -> &str {
    key.rfind('/').map_or(key, |at| &key[at + 1..])
}

struct Builder<'a> {
    dirs: Vec<Dir>,
    dir_names: String,
    /// The plan position that first used each directory.
    created: Vec<u64>,
    index: HashMap<(u32, &'a str), u32>,
}

impl<'a> Builder<'a> {
    fn new() -> Self {
        let mut b = Builder {
            dirs: Vec::new(),
            dir_names: String::new(),
            created: Vec::new(),
            index: HashMap::new(),
        };
        b.push(ROOT as u32, "", 0);
        b
    }

    /// The directory at `path` under the root, created as needed.
    fn dir_path(&mut self, path: &'a str, at: u64) -> u32 {
        let mut cur = ROOT as u32;
        for part in path.split('/').filter(|s| !s.is_empty()) {
            cur = match self.index.get(&(cur, part)) {
                Some(&ino) => ino,
                None => {
                    let ino = self.push(cur, part, at);
                    self.index.insert((cur, part), ino);
                    ino
                }
            };
        }
        cur
    }

    fn push(&mut self, parent: u32, name: &str, at: u64) -> u32 {
        self.dirs.push(Dir {
            parent,
            name_at: self.dir_names.len() as u32,
            name_len: name.len() as u32,
            first: 0,
            len: 0,
            subdirs: 0,
        });
        self.dir_names.push_str(name);
        self.created.push(at);
        self.dirs.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chute_plan::{plan_from_entries, plan_from_listing, ObjectInfo};

    fn obj(path: &str, size: u64) -> PlannedObject {
        PlannedObject::new("b".into(), format!("p/{path}"), size, None, path)
    }

    fn plan(objects: Vec<PlannedObject>, dirs: &[&str]) -> Plan {
        Plan {
            objects,
            dirs: dirs.iter().map(|d| d.to_string()).collect(),
            skipped: vec![],
        }
    }

    fn names(t: &Tree, p: &Plan, ino: u64) -> Vec<String> {
        t.entries(ino, 2, p.objects.as_slice())
            .expect("a directory")
            .map(|(_, e)| e.name.to_owned())
            .collect()
    }

    #[test]
    fn builds_nested_dirs_and_empty_dirs() {
        let plan = plan(
            vec![obj("a/b/c.bin", 3), obj("a/d", 0), obj("top", 1)],
            &["empty/inner"],
        );
        let keys = plan.objects.as_slice();
        let (t, conflicts) = Tree::build(&plan);
        assert!(conflicts.is_empty());
        let a = t.lookup(ROOT, b"a", keys).expect("a");
        let b = t.lookup(a, b"b", keys).expect("b");
        let c = t.lookup(b, b"c.bin", keys).expect("c");
        let Some(NodeKind::File { object }) = t.get(c) else {
            panic!("c.bin is a file");
        };
        assert_eq!(plan.objects[object as usize].size, 3);
        assert_eq!(t.file_parent[object as usize], b as u32);
        let e = t.lookup(ROOT, b"empty", keys).expect("empty");
        assert!(t.lookup(e, b"inner", keys).is_some());
        assert_eq!(t.files, 3);
        assert_eq!(t.dirs, 5);
        assert_eq!(names(&t, &plan, ROOT), ["a", "empty", "top"]);
        assert!(matches!(
            t.get(ROOT),
            Some(NodeKind::Dir {
                subdirs: 2,
                entries: 3
            })
        ));
        // Directories first (the root is 1), then objects in plan order.
        assert_eq!((a, b, e), (2, 3, 4));
        assert_eq!(t.lookup(ROOT, b"top", keys), Some(6 + 2));
        assert_eq!(t.len(), 5 + 3);
    }

    #[test]
    fn conflicting_paths_are_reported_not_placed() {
        let plan = plan(vec![obj("x", 1), obj("x/y", 1), obj("x", 2)], &[]);
        let keys = plan.objects.as_slice();
        let (t, conflicts) = Tree::build(&plan);
        assert_eq!(conflicts, ["x/y", "x"]);
        assert_eq!(t.files, 1);
        assert!(matches!(
            t.get(t.lookup(ROOT, b"x", keys).expect("x")),
            Some(NodeKind::File { object: 0 })
        ));
        assert_eq!(names(&t, &plan, ROOT), ["x"]);
        assert!(matches!(
            t.get(ROOT),
            Some(NodeKind::Dir { subdirs: 0, .. })
        ));
        // The directory that lost its name is gone, with what was under it.
        assert_eq!(t.dirs, 1);
        assert!(t.get(2).is_none());
    }

    #[test]
    fn the_first_listed_keeps_a_name() {
        // A directory used before a file of the same name keeps the name;
        // markers come after every object.
        let plan = plan(
            vec![obj("d/a", 1), obj("d", 2), obj("e", 3), obj("f/g", 4)],
            &["e/h", "f", "i"],
        );
        let keys = plan.objects.as_slice();
        let (t, conflicts) = Tree::build(&plan);
        assert_eq!(conflicts, ["d", "e/h"]);
        assert_eq!(names(&t, &plan, ROOT), ["d", "e", "f", "i"]);
        let d = t.lookup(ROOT, b"d", keys).expect("d");
        assert!(matches!(t.get(d), Some(NodeKind::Dir { .. })));
        let e = t.lookup(ROOT, b"e", keys).expect("e");
        assert!(matches!(t.get(e), Some(NodeKind::File { object: 2 })));
        assert_eq!(t.files, 3);
        assert_eq!(t.dirs, 4);
    }

    #[test]
    fn names_come_from_keys_unless_mapped_elsewhere() {
        let info = |key: &str| ObjectInfo {
            bucket: "b".into(),
            key: key.into(),
            size: 1,
            etag: None,
        };
        // A manifest may put an object at any path.
        let plan = plan_from_entries(vec![
            (info("k/one"), "x/one".into()),
            (info("k/two"), "x/deux".into()),
            (info("zz"), "x/zz".into()),
        ]);
        let (t, conflicts) = Tree::build(&plan);
        assert!(conflicts.is_empty());
        assert_eq!(t.renamed.len(), 1);
        let keys = plan.objects.as_slice();
        let x = t.lookup(ROOT, b"x", keys).expect("x");
        assert_eq!(names(&t, &plan, x), ["deux", "one", "zz"]);
        let deux = t.lookup(x, b"deux", keys).expect("deux");
        assert!(matches!(t.get(deux), Some(NodeKind::File { object: 1 })));
        assert!(t.lookup(x, b"two", keys).is_none());
    }

    #[test]
    fn entries_resume_at_any_offset() {
        let plan = plan(vec![obj("d/b", 1), obj("d/a", 1), obj("d/s/c", 1)], &[]);
        let keys = plan.objects.as_slice();
        let (t, _) = Tree::build(&plan);
        let d = t.lookup(ROOT, b"d", keys).expect("d");
        let all: Vec<(u64, u64, bool, String)> = t
            .entries(d, 0, keys)
            .expect("dir")
            .map(|(next, e)| (next, e.ino, e.is_dir, e.name.to_owned()))
            .collect();
        let got: Vec<(u64, bool, &str)> = all
            .iter()
            .map(|(next, _, dir, name)| (*next, *dir, name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, true, "."),
                (2, true, ".."),
                (3, false, "a"),
                (4, false, "b"),
                (5, true, "s")
            ]
        );
        assert_eq!((all[0].1, all[1].1), (d, ROOT));
        for from in 0..=6 {
            let rest: Vec<u64> = t
                .entries(d, from, keys)
                .expect("dir")
                .map(|e| e.0)
                .collect();
            let want: Vec<u64> = (from.min(5) + 1..=5).collect();
            assert_eq!(rest, want, "from {from}");
        }
        let file = t.lookup(d, b"a", keys).expect("a");
        assert!(t.entries(file, 0, keys).is_none());
        assert!(t.entries(999, 0, keys).is_none());
        assert!(t.get(0).is_none() && t.get(999).is_none());
    }

    #[test]
    fn readdir_of_a_big_flat_directory_is_linear() {
        // 200k entries read the way the kernel does, a page of names per call,
        // each call resuming at the offset the last one returned. Rebuilding
        // the remaining entries on each call would build 10^10 of them.
        let objects: Vec<ObjectInfo> = (0..200_000)
            .map(|i| ObjectInfo {
                bucket: "b".into(),
                key: format!("flat/sample-{:07}.jpg", (i * 7919) % 200_000),
                size: 1,
                etag: None,
            })
            .collect();
        let plan = plan_from_listing("flat/", objects);
        let keys = plan.objects.as_slice();
        let (t, conflicts) = Tree::build(&plan);
        assert!(conflicts.is_empty());
        let started = std::time::Instant::now();
        let mut offset = 0;
        let mut seen = 0u64;
        let mut last = String::new();
        loop {
            let page: Vec<(u64, Entry<'_>)> = t
                .entries(ROOT, offset, keys)
                .expect("root")
                .take(100)
                .collect();
            let Some(&(next, _)) = page.last() else { break };
            for (_, e) in &page {
                if !e.is_dir {
                    assert!(*e.name > *last, "{} after {last}", e.name);
                    last = e.name.to_owned();
                    seen += 1;
                }
            }
            offset = next;
        }
        assert_eq!(seen, 200_000);
        // Generous: a linear walk takes well under a second even in debug.
        assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
        for i in [0, 1, 99_999, 199_999] {
            let name = format!("sample-{i:07}.jpg");
            let ino = t.lookup(ROOT, name.as_bytes(), keys).expect("lookup");
            let Some(NodeKind::File { object }) = t.get(ino) else {
                panic!("{name} is a file");
            };
            assert_eq!(plan.objects[object as usize].path(), name);
        }
    }

    #[test]
    fn a_file_costs_eight_bytes() {
        let plan = plan(
            (0..10_000)
                .map(|i| obj(&format!("d{}/f{i}", i % 10), 1))
                .collect(),
            &[],
        );
        let (t, _) = Tree::build(&plan);
        let per_file = t.heap_bytes() as f64 / 10_000.0;
        assert!(per_file < 8.5, "{per_file} bytes per file");
    }
}
