//! The inode table: the channel plan turned into a directory tree, once, at
//! mount time. Every metadata operation (lookup, getattr, readdir) is answered
//! from here, from memory, so `ls` and `find` never touch S3.
//!
//! Inode numbers are positions in one vector (the root is 1) and never change
//! while the file system is mounted: the tree is immutable, which is what lets
//! the kernel cache entries and attributes for as long as it likes.

use std::collections::HashMap;

use chute_plan::Plan;

pub(crate) const ROOT: u64 = 1;

#[derive(Debug)]
pub(crate) enum NodeKind {
    Dir {
        /// Children sorted bytewise by name: binary search for lookup, stable
        /// offsets for readdir.
        children: Vec<(Box<str>, u64)>,
        subdirs: u32,
    },
    File {
        /// Index into the plan's objects (also the listing order).
        object: usize,
        size: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Node {
    pub parent: u64,
    pub kind: NodeKind,
}

#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
    pub files: u64,
    pub dirs: u64,
}

impl Tree {
    /// The tree of `plan`; the second value lists paths that could not be
    /// placed (a plan never has them, but a tree must not trust that).
    pub fn build(plan: &Plan) -> (Tree, Vec<String>) {
        let mut b = Builder {
            nodes: vec![Node {
                parent: ROOT,
                kind: NodeKind::Dir {
                    children: Vec::new(),
                    subdirs: 0,
                },
            }],
            index: HashMap::new(),
            conflicts: Vec::new(),
        };
        for (i, o) in plan.objects.iter().enumerate() {
            let mut parts: Vec<&str> = o.path().split('/').filter(|s| !s.is_empty()).collect();
            let Some(name) = parts.pop() else {
                b.conflicts.push(o.path().to_owned());
                continue;
            };
            let Some(parent) = b.dir_path(&parts) else {
                b.conflicts.push(o.path().to_owned());
                continue;
            };
            let file = NodeKind::File {
                object: i,
                size: o.size,
            };
            if b.add(parent, name, file).is_none() {
                b.conflicts.push(o.path().to_owned());
            }
        }
        for d in &plan.dirs {
            let parts: Vec<&str> = d.split('/').filter(|s| !s.is_empty()).collect();
            if b.dir_path(&parts).is_none() {
                b.conflicts.push(d.clone());
            }
        }
        let Builder {
            mut nodes,
            conflicts,
            ..
        } = b;
        let mut files = 0;
        let mut dirs = 0;
        for n in &mut nodes {
            match &mut n.kind {
                NodeKind::Dir { children, .. } => {
                    children.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                    dirs += 1;
                }
                NodeKind::File { .. } => files += 1,
            }
        }
        (Tree { nodes, files, dirs }, conflicts)
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        let idx = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.nodes.get(idx)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<u64> {
        match &self.get(parent)?.kind {
            NodeKind::Dir { children, .. } => children
                .binary_search_by(|c| c.0.as_bytes().cmp(name))
                .ok()
                .map(|i| children[i].1),
            NodeKind::File { .. } => None,
        }
    }

    pub fn len(&self) -> u64 {
        self.nodes.len() as u64
    }
}

struct Builder {
    nodes: Vec<Node>,
    index: HashMap<(u64, String), u64>,
    conflicts: Vec<String>,
}

impl Builder {
    /// The directory at `parts` under the root, created as needed; `None` when a
    /// file stands in the way.
    fn dir_path(&mut self, parts: &[&str]) -> Option<u64> {
        let mut cur = ROOT;
        for part in parts {
            cur = match self.index.get(&(cur, (*part).to_owned())) {
                Some(&ino) => match self.nodes[(ino - 1) as usize].kind {
                    NodeKind::Dir { .. } => ino,
                    NodeKind::File { .. } => return None,
                },
                None => self.add(
                    cur,
                    part,
                    NodeKind::Dir {
                        children: Vec::new(),
                        subdirs: 0,
                    },
                )?,
            };
        }
        Some(cur)
    }

    fn add(&mut self, parent: u64, name: &str, kind: NodeKind) -> Option<u64> {
        let key = (parent, name.to_owned());
        if self.index.contains_key(&key) {
            return None;
        }
        let is_dir = matches!(kind, NodeKind::Dir { .. });
        self.nodes.push(Node { parent, kind });
        let ino = self.nodes.len() as u64;
        self.index.insert(key, ino);
        if let NodeKind::Dir { children, subdirs } = &mut self.nodes[(parent - 1) as usize].kind {
            children.push((name.into(), ino));
            if is_dir {
                *subdirs += 1;
            }
        }
        Some(ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chute_plan::PlannedObject;

    fn obj(path: &str, size: u64) -> PlannedObject {
        PlannedObject::new("b".into(), format!("p/{path}"), size, None, path)
    }

    #[test]
    fn builds_nested_dirs_and_empty_dirs() {
        let plan = Plan {
            objects: vec![obj("a/b/c.bin", 3), obj("a/d", 0), obj("top", 1)],
            dirs: vec!["empty/inner".into()],
            skipped: vec![],
        };
        let (t, conflicts) = Tree::build(&plan);
        assert!(conflicts.is_empty());
        let a = t.lookup(ROOT, b"a").expect("a");
        let b = t.lookup(a, b"b").expect("b");
        let c = t.lookup(b, b"c.bin").expect("c");
        assert!(matches!(
            t.get(c).map(|n| &n.kind),
            Some(NodeKind::File { size: 3, .. })
        ));
        let e = t.lookup(ROOT, b"empty").expect("empty");
        assert!(t.lookup(e, b"inner").is_some());
        assert_eq!(t.files, 3);
        assert_eq!(t.dirs, 5);
        match &t.get(ROOT).expect("root").kind {
            NodeKind::Dir { children, subdirs } => {
                let names: Vec<&str> = children.iter().map(|c| &*c.0).collect();
                assert_eq!(names, ["a", "empty", "top"]);
                assert_eq!(*subdirs, 2);
            }
            NodeKind::File { .. } => panic!("root is a dir"),
        }
    }

    #[test]
    fn conflicting_paths_are_reported_not_placed() {
        let plan = Plan {
            objects: vec![obj("x", 1), obj("x/y", 1), obj("x", 2)],
            dirs: vec![],
            skipped: vec![],
        };
        let (t, conflicts) = Tree::build(&plan);
        assert_eq!(conflicts, ["x/y", "x"]);
        assert_eq!(t.files, 1);
        assert!(matches!(
            t.get(t.lookup(ROOT, b"x").expect("x")).map(|n| &n.kind),
            Some(NodeKind::File { object: 0, .. })
        ));
    }
}
