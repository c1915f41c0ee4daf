//! The whiteout cases of containerd's TestBreakouts: the tree each layer meets and the layer.
//! Shared by apply_breakouts (remove mode) and apply_aufs (aufs mode), which expect different
//! trees from them.

use std::fs;
use std::os::unix::fs::symlink;

use super::sandbox::Sandbox;
use super::tar::Tar;

/// A sandbox set up for one case, and the layer to apply to it.
pub struct Breakout {
    pub sb: Sandbox,
    pub layer: Vec<u8>,
}

/// Whiteout names leaving their directory, each refused on containerd's etc tree.
pub const INVALID_WHITEOUTS: [&str; 4] = [".wh...", "etc/.wh...", ".wh..", "etc/.wh.."];

/// containerd's etc tree, then `more` on it.
fn etc_and(more: impl FnOnce(&Sandbox)) -> Sandbox {
    let sb = Sandbox::new();
    sb.etc_tree();
    more(&sb);
    sb
}

pub fn whiteout_symlink() -> Breakout {
    Breakout {
        sb: etc_and(|sb| symlink("/etc", sb.p("localetc")).unwrap()),
        layer: Tar::new().file(".wh.localetc", b"").finish(),
    }
}

pub fn whiteout_symlink_path() -> Breakout {
    Breakout {
        sb: etc_and(|sb| {
            fs::write(sb.p("etc/whitedout"), "w").unwrap();
            symlink("/etc", sb.p("localetc")).unwrap();
        }),
        layer: Tar::new().file("localetc/.wh.whitedout", b"").finish(),
    }
}

pub fn whiteout_directory_name() -> Breakout {
    Breakout {
        sb: etc_and(|sb| symlink("/etc", sb.p("localetc")).unwrap()),
        layer: Tar::new().file(".wh.etc/somefile", b"non-empty").finish(),
    }
}

pub fn whiteout_dead_symlink_parent() -> Breakout {
    Breakout {
        sb: etc_and(|sb| symlink("/dne", sb.p("localetc")).unwrap()),
        layer: Tar::new().file("localetc/.wh.etc", b"").finish(),
    }
}

pub fn whiteout_relative_path() -> Breakout {
    Breakout {
        sb: etc_and(|sb| symlink("/dne", sb.p("localetc")).unwrap()),
        layer: Tar::new().file("dne/../.wh.etc", b"").finish(),
    }
}

pub fn whiteout_opaque() -> Breakout {
    Breakout {
        sb: etc_and(|sb| fs::write(sb.p("etc/shadow"), "s").unwrap()),
        layer: Tar::new()
            .file("etc/.wh..wh..opq", b"")
            .file("etc/group", b"all groups")
            .finish(),
    }
}

pub fn whiteout_opaque_out_of_order() -> Breakout {
    Breakout {
        sb: etc_and(|_| {}),
        layer: Tar::new()
            .file("etc/group", b"all groups")
            .file("etc/.wh..wh..opq", b"")
            .finish(),
    }
}
