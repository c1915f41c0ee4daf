//! Compact sets and lists of the layer's paths, kept for the whole apply (as containerd keeps
//! `unpackedPaths` and `dirs`): a layer of many deep names would otherwise hold every full
//! name, thousands of bytes each.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// A set of paths held as 128-bit digests: 16 bytes a path, whatever its length. SHA-256, not
/// a fast hash, so that a layer cannot make two paths collide on purpose.
#[derive(Default)]
pub(super) struct PathSet(HashSet<[u8; 16]>);

impl PathSet {
    fn digest(path: &[u8]) -> [u8; 16] {
        let d = Sha256::digest(path);
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    pub(super) fn insert(&mut self, path: &[u8]) {
        self.0.insert(Self::digest(path));
    }

    pub(super) fn contains(&self, path: &[u8]) -> bool {
        self.0.contains(&Self::digest(path))
    }
}

/// A list of names in order, each stored as the length it shares with the one before and the
/// rest (front coding): the names of a tar stream share long prefixes.
pub(super) struct NameList<T> {
    bytes: Vec<u8>,
    /// Per name: the shared length, where its rest ends in `bytes`, and its value.
    items: Vec<(u32, u32, T)>,
    last: Vec<u8>,
}

impl<T> Default for NameList<T> {
    fn default() -> Self {
        NameList {
            bytes: Vec::new(),
            items: Vec::new(),
            last: Vec::new(),
        }
    }
}

impl<T> NameList<T> {
    pub(super) fn push(&mut self, name: &[u8], value: T) {
        let shared = self
            .last
            .iter()
            .zip(name)
            .take_while(|(a, b)| a == b)
            .count();
        self.bytes.extend_from_slice(&name[shared..]);
        // Names are under PATH_MAX bytes and the layer has fewer than 4 Gi bytes of them
        // per apply in any memory this could fit.
        self.items
            .push((shared as u32, self.bytes.len() as u32, value));
        self.last.truncate(shared);
        self.last.extend_from_slice(&name[shared..]);
    }

    /// Call `f` with each name and its value, in the order pushed.
    pub(super) fn drain<E>(
        &mut self,
        mut f: impl FnMut(&[u8], T) -> Result<(), E>,
    ) -> Result<(), E> {
        let bytes = std::mem::take(&mut self.bytes);
        self.last.clear();
        let mut name = Vec::new();
        let mut start = 0usize;
        for (shared, end, value) in self.items.drain(..) {
            name.truncate(shared as usize);
            name.extend_from_slice(&bytes[start..end as usize]);
            start = end as usize;
            f(&name, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_list_gives_back_what_was_pushed() {
        let names: [&[u8]; 6] = [b"a/b/c", b"a/b/d", b"a", b"", b"x/y", b"x/y/z"];
        let mut list = NameList::default();
        for (i, n) in names.iter().enumerate() {
            list.push(n, i);
        }
        let mut got = Vec::new();
        list.drain(|n, i| {
            got.push((n.to_vec(), i));
            Ok::<(), ()>(())
        })
        .unwrap();
        let want: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_vec(), i))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn path_set_tells_paths_apart() {
        let mut set = PathSet::default();
        set.insert(b"a/b");
        assert!(set.contains(b"a/b"));
        assert!(!set.contains(b"a/c"));
        assert!(!set.contains(b"a"));
    }
}
