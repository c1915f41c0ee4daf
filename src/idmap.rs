//! UID/GID maps between a user namespace's IDs (container IDs) and the IDs the files have on
//! disk (host IDs), in containerd's form: ranges of `container:host:size` (`specs.LinuxIDMapping`,
//! containerd's `userns.IDMap`). Compare maps host → container in the headers it writes; apply
//! maps container → host in the fchown it does.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One range: container IDs `container..container+size` are host IDs `host..host+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container, self.host, self.size)
    }
}

impl FromStr for IdRange {
    type Err = Error;

    /// `C:H:N`, as containerd's `parseIDMapping` and `ctr run --uidmap` take it.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "ID mapping {s:?}: {why} (want container-id:host-id:size)"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [c, h, n] = parts[..] else {
            return Err(bad("not three fields"));
        };
        let num = |what: &str, v: &str| {
            v.parse::<u32>().map_err(|_| {
                bad(&format!(
                    "{what} {v:?} is not a number from 0 to 4294967295"
                ))
            })
        };
        Ok(IdRange {
            container: num("container ID", c)?,
            host: num("host ID", h)?,
            size: num("size", n)?,
        })
    }
}

/// The most ranges a map takes: the kernel's limit for a user namespace's `uid_map` (Linux
/// 4.15 on), which also bounds the overlap check.
pub const MAX_RANGES: usize = 340;

/// A validated map: ranges that neither overlap on the container side nor on the host side
/// (so both directions are functions). The empty map is the identity, as containerd's
/// `toHost`/`toContainer` treat a missing map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    /// Check `ranges` (`what` names the map in errors: "uid map", "gid map"): every size above
    /// zero, no range past 2^32, no two ranges overlapping on either side.
    pub fn new(what: &str, ranges: Vec<IdRange>) -> Result<Self> {
        let end = |start: u32, size: u32| start as u64 + size as u64;
        if ranges.len() > MAX_RANGES {
            return Err(Error::InvalidArgument(format!(
                "{what}: {} ranges, more than the kernel's {MAX_RANGES}",
                ranges.len()
            )));
        }
        for r in &ranges {
            if r.size == 0 {
                return Err(Error::InvalidArgument(format!(
                    "{what}: range {r} is empty"
                )));
            }
            if end(r.container, r.size) > 1 << 32 || end(r.host, r.size) > 1 << 32 {
                return Err(Error::InvalidArgument(format!(
                    "{what}: range {r} goes past ID 4294967295"
                )));
            }
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                let overlap = |s1: u32, s2: u32| {
                    (s1 as u64) < end(s2, b.size) && (s2 as u64) < end(s1, a.size)
                };
                if overlap(a.container, b.container) {
                    return Err(Error::InvalidArgument(format!(
                        "{what}: ranges {a} and {b} overlap on the container side"
                    )));
                }
                if overlap(a.host, b.host) {
                    return Err(Error::InvalidArgument(format!(
                        "{what}: ranges {a} and {b} overlap on the host side"
                    )));
                }
            }
        }
        Ok(IdMap { ranges })
    }

    /// A comma-separated list of `C:H:N` (the form of containerd's snapshot labels and of
    /// the `uidmap=`/`gidmap=` mount options); empty is the identity.
    pub fn parse_list(what: &str, s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(IdMap::default());
        }
        let ranges = s.split(',').map(str::parse).collect::<Result<Vec<_>>>()?;
        IdMap::new(what, ranges)
    }

    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    /// containerd's `toContainer`: the container ID of host ID `id`, if the map has it.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        self.lookup(id, |r| (r.host, r.container))
    }

    /// containerd's `toHost`: the host ID of container ID `id`, if the map has it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        self.lookup(id, |r| (r.container, r.host))
    }

    /// `id` through the range whose side `(from, to)` contains it; the identity when empty.
    fn lookup(&self, id: u32, sides: impl Fn(&IdRange) -> (u32, u32)) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(id);
        }
        self.ranges.iter().find_map(|r| {
            let (from, to) = sides(r);
            let off = id.checked_sub(from)?;
            (off < r.size).then(|| to + off)
        })
    }
}

/// What to do with an ID the map does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnmappedId {
    /// Fail, naming the path and the ID (the default).
    #[default]
    Error,
    /// Use this ID instead (typically the overflow ID 65534, as the kernel shows unmapped IDs).
    Substitute(u32),
}

/// The uid and gid maps of one compare or apply, and the policy for IDs outside them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: IdMap,
    pub gid: IdMap,
    pub unmapped: UnmappedId,
}

/// Which way [`IdMaps::map_owner`] maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Files on disk to layer headers (compare).
    HostToContainer,
    /// Layer headers to files on disk (apply).
    ContainerToHost,
}

impl IdMaps {
    pub fn is_identity(&self) -> bool {
        self.uid.is_identity() && self.gid.is_identity()
    }

    /// Map an owner (uid, gid) the given way; `path` names the entry when an ID has no mapping
    /// and the policy is to fail.
    pub(crate) fn map_owner(
        &self,
        dir: Direction,
        uid: u32,
        gid: u32,
        path: &dyn fmt::Display,
    ) -> Result<(u32, u32)> {
        let one = |map: &IdMap, what: &str, id: u32| {
            let mapped = match dir {
                Direction::HostToContainer => map.to_container(id),
                Direction::ContainerToHost => map.to_host(id),
            };
            match (mapped, self.unmapped) {
                (Some(v), _) => Ok(v),
                (None, UnmappedId::Substitute(v)) => Ok(v),
                (None, UnmappedId::Error) => Err(Error::InvalidArgument(format!(
                    "{what} {id} of {path} is outside the {what} map ({})",
                    match dir {
                        Direction::HostToContainer => "no container ID maps to it",
                        Direction::ContainerToHost => "it maps to no host ID",
                    }
                ))),
            }
        };
        Ok((one(&self.uid, "uid", uid)?, one(&self.gid, "gid", gid)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(container: u32, host: u32, size: u32) -> IdRange {
        IdRange {
            container,
            host,
            size,
        }
    }

    #[test]
    fn parses_containerd_form() {
        assert_eq!(
            "0:524288:65536".parse::<IdRange>().unwrap(),
            r(0, 524288, 65536)
        );
        for bad in ["", "1:2", "1:2:3:4", "a:1:1", "-1:0:1", "0:0:4294967296"] {
            let e = bad.parse::<IdRange>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let m = IdMap::parse_list("uid map", "0:1000:1,1:100000:65536").unwrap();
        assert_eq!(m.ranges(), &[r(0, 1000, 1), r(1, 100000, 65536)]);
        assert!(IdMap::parse_list("uid map", "").unwrap().is_identity());
    }

    #[test]
    fn rejects_overlaps_empty_and_overflowing_ranges() {
        let e = |v| IdMap::new("uid map", v).unwrap_err().to_string();
        assert!(e(vec![r(0, 100, 10), r(9, 200, 1)]).contains("container side"));
        assert!(e(vec![r(0, 100, 10), r(10, 105, 1)]).contains("host side"));
        assert!(e(vec![r(0, 100, 0)]).contains("empty"));
        assert!(e(vec![r(0, u32::MAX, 2)]).contains("past ID"));
        IdMap::new(
            "uid map",
            vec![r(0, 100, 10), r(10, 110, 1), r(0xffff_ffff, 0, 1)],
        )
        .unwrap();
    }

    #[test]
    fn maps_both_ways_and_applies_the_policy() {
        let m = IdMap::new("uid map", vec![r(0, 524288, 65536), r(65536, 1000, 1)]).unwrap();
        assert_eq!(m.to_container(524288), Some(0));
        assert_eq!(m.to_container(524288 + 65535), Some(65535));
        assert_eq!(m.to_container(524288 + 65536), None);
        assert_eq!(m.to_container(1000), Some(65536));
        assert_eq!(m.to_host(65536), Some(1000));
        assert_eq!(m.to_host(65537), None);
        let mut maps = IdMaps {
            uid: m.clone(),
            gid: m,
            unmapped: UnmappedId::Error,
        };
        let p = "some/file";
        assert_eq!(
            maps.map_owner(Direction::HostToContainer, 524289, 1000, &p)
                .unwrap(),
            (1, 65536)
        );
        let e = maps
            .map_owner(Direction::HostToContainer, 0, 524288, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("uid 0 of some/file"), "{e}");
        maps.unmapped = UnmappedId::Substitute(65534);
        assert_eq!(
            maps.map_owner(Direction::ContainerToHost, 70000, 0, &p)
                .unwrap(),
            (65534, 524288)
        );
        assert_eq!(
            IdMaps::default()
                .map_owner(Direction::ContainerToHost, 7, 8, &p)
                .unwrap(),
            (7, 8)
        );
    }
}
