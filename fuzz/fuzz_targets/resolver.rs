//! continuity's `fs.RootPath` port (`Root::root_path`) on a tree of directories and symlinks
//! the input builds: it must never panic or loop, must return a clean in-root path (no empty,
//! `.` or `..` components, no `/` inside one), and must resolve the same with `openat2`
//! (`RESOLVE_IN_ROOT`) as with the walk used on kernels without it. Parity with continuity
//! itself is checked by the Go target FuzzApply.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

use layerdiff::fuzzing::{Resolver, Root};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Names are drawn from a few, so that entries collide and links point at each other.
const NAMES: [&str; 8] = ["a", "b", "c", "d", "..", ".", "a/b", "x/../a"];

#[derive(Arbitrary, Debug)]
enum Node {
    /// A directory at NAMES[parent]/NAMES[name] (parent 255: at the root).
    Dir { parent: u8, name: u8 },
    /// A symlink with any target.
    Symlink {
        parent: u8,
        name: u8,
        target: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    nodes: Vec<Node>,
    path: Vec<u8>,
}

fn at(parent: u8, name: u8) -> String {
    let name = NAMES[name as usize % NAMES.len()];
    match parent {
        255 => name.to_string(),
        p => format!("{}/{name}", NAMES[p as usize % NAMES.len()]),
    }
}

fuzz_target!(|input: Input| {
    if input.nodes.len() > 32 || input.path.contains(&0) {
        return;
    }
    let top = tempfile::tempdir().expect("tempdir");
    let root = top.path().join("root");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(top.path().join("outside")).expect("outside");
    for node in &input.nodes {
        // Creation fails often (missing parents, names taken, `..`): that is part of the game.
        let _ = match node {
            Node::Dir { parent, name } => std::fs::create_dir(root.join(at(*parent, *name))),
            Node::Symlink {
                parent,
                name,
                target,
            } => {
                if target.contains(&0) {
                    continue;
                }
                symlink(OsStr::from_bytes(target), root.join(at(*parent, *name)))
            }
        };
    }
    let direct = Root::open(&root, Resolver::Auto).and_then(|r| r.root_path(&input.path));
    let walked = Root::open(&root, Resolver::Walk).and_then(|r| r.root_path(&input.path));
    match (&direct, &walked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "openat2 and the walk resolve differently"),
        (Err(a), Err(b)) => assert_eq!(a.raw_os_error(), b.raw_os_error(), "{a} vs {b}"),
        _ => panic!("openat2 gives {direct:?}, the walk {walked:?}"),
    }
    if let Ok((comps, _)) = direct {
        for c in &comps {
            assert!(
                !c.is_empty() && c != b"." && c != b".." && !c.contains(&b'/'),
                "unclean component {:?} in {comps:?}",
                String::from_utf8_lossy(c)
            );
        }
    }
});
