//! The `layerdiff` CLI as people and build scripts use it: exit codes, one-line errors,
//! stdout that cannot be written, SOURCE_DATE_EPOCH, `apply --diff-id`, `ls`, completions and
//! man pages, and the progress display drawn on a real pseudo-terminal (util-linux `script`).

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::compress::{gzip, sha256_digest as sha256};
use common::rng::Rng;
use common::tar::{Header, Tar};

const BIN: &str = env!("CARGO_BIN_EXE_layerdiff");

fn cli() -> Command {
    let mut c = Command::new(BIN);
    // The tests decide where SOURCE_DATE_EPOCH comes from.
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

fn run(args: &[&str]) -> Output {
    cli().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The process failed with `code` and said why in exactly one line starting `layerdiff: `,
/// with no panic and no terminal control bytes.
#[track_caller]
fn assert_one_line_failure(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(
        err.starts_with("layerdiff: ") && err.ends_with('\n'),
        "{err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !err.trim_end().bytes().any(|b| b.is_ascii_control()),
        "control bytes in {err:?}"
    );
    err
}

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_string()
    }
    fn write(&self, rel: &str, data: &[u8]) -> String {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        self.s(rel)
    }
    fn mkdir(&self, rel: &str) -> String {
        fs::create_dir_all(self.p(rel)).unwrap();
        self.s(rel)
    }
}

fn small_layer() -> Vec<u8> {
    Tar::new()
        .dir("d/")
        .file("d/f", b"hello")
        .symlink("f", "d/l")
        .finish()
}

// ---- exit codes, usage errors, version ----

#[test]
fn exit_codes_are_0_ok_1_failure_2_usage() {
    let w = Work::new();
    let layer = w.write("l.tar", &small_layer());
    let root = w.mkdir("root");
    let ok = run(&["apply", &layer, &root]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(ok.stderr.is_empty(), "{}", stderr(&ok));

    let bad = w.write("bad.tar", b"not a tar stream, far too short");
    assert_one_line_failure(&run(&["apply", &bad, &root]), 1);
    assert_one_line_failure(&run(&["ls", &w.s("missing.tar")]), 1);

    for args in [
        &["apply", "--bogus", &layer, &root][..],
        &["apply", &layer][..],
        &["apply", "--whiteouts", "sideways", &layer, &root][..],
        &["apply", "--progress", "sometimes", &layer, &root][..],
        &["apply", "--diff-id", "sha256:abc", &layer, &root][..],
        &["diff", "a", "b"][..],
        &["frobnicate"][..],
        &[][..],
    ] {
        let o = run(args);
        let err = assert_one_line_failure(&o, 2);
        assert!(err.contains("--help"), "{args:?}: {err}");
    }
}

#[test]
fn usage_error_names_the_problem_and_the_subcommand() {
    let err = assert_one_line_failure(&run(&["apply", "--whiteouts", "sideways", "l", "r"]), 2);
    assert!(
        err.contains("'sideways'") && err.contains("remove, overlay"),
        "{err}"
    );
    assert!(err.contains("layerdiff apply --help"), "{err}");
    let err = assert_one_line_failure(&run(&["ls"]), 2);
    assert!(err.contains("<LAYER>"), "{err}");
    // Flags that clap accepts one by one but not together are usage errors too.
    let (lower, upper) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dirs = [
        lower.path().to_str().unwrap(),
        upper.path().to_str().unwrap(),
    ];
    for flags in [
        ["--compression", "none", "--level", "3"],
        ["--compression", "gzip", "--level", "12"],
    ] {
        let mut args = vec!["diff"];
        args.extend(flags);
        args.extend(dirs);
        args.extend(["-o", "-"]);
        let err = assert_one_line_failure(&run(&args), 2);
        assert!(err.contains("level"), "{flags:?}: {err}");
    }
}

#[test]
fn version_names_the_library_version() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("layerdiff "), "{out}");
    assert!(
        out.contains(&format!("library liblayerdiff {}", layerdiff::VERSION)),
        "{out}"
    );
}

#[test]
fn help_documents_exit_codes_and_source_date_epoch() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    for needle in ["Exit status:", "2 ", "Usage error", "SOURCE_DATE_EPOCH"] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    let o = run(&["apply", "--help"]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("--diff-id") && out.contains("partly written"),
        "{out}"
    );
}

// ---- stdout that cannot be written (issue 10, finding 5) ----

/// Each command that prints, with stdout a pipe whose reader is gone and with /dev/full:
/// one clear line and exit 1, not a panic (exit 101) after the work is done.
#[test]
fn unwritable_stdout_is_one_line_and_exit_1() {
    let w = Work::new();
    let mut tar = Tar::new();
    for i in 0..2000 {
        tar = tar.file(&format!("f{i}"), b"x");
    }
    let layer = w.write("l.tar", &tar.finish());
    let lower = w.mkdir("lower");
    let upper = w.mkdir("upper");
    w.write("upper/f", b"f");
    let root = w.mkdir("root");
    let out = w.s("out.tgz");
    let commands: Vec<Vec<&str>> = vec![
        vec!["apply", &layer, &root],
        vec!["diff", &lower, &upper, "-o", &out],
        vec!["diff", &lower, &upper, "-o", "-"],
        vec!["ls", &layer],
        vec!["ls", "--json", &layer],
        vec!["--version"],
        vec!["--help"],
        vec!["completions", "bash"],
    ];
    for args in &commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let closed = cli().args(args).stdout(writer).output().unwrap();
        let err = assert_one_line_failure(&closed, 1);
        assert!(
            err.contains("stdout") || err.contains("write layer"),
            "{args:?}: {err}"
        );
        assert!(err.contains("Broken pipe"), "{args:?}: {err}");

        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = cli().args(args).stdout(full).output().unwrap();
        let err = assert_one_line_failure(&o, 1);
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
    }
}

// ---- error lines carry names from a layer escaped ----

#[test]
fn names_from_the_layer_cannot_break_the_error_line_or_drive_the_terminal() {
    let w = Work::new();
    // A file, then an entry below it: apply fails naming the file's path.
    let evil = "x\n\x1b[2Jfake: ok\r\u{9b}31m";
    let layer = w.write(
        "evil.tar",
        &Tar::new()
            .file(evil, b"a file")
            .file(&format!("{evil}/child"), b"c")
            .finish(),
    );
    let root = w.mkdir("root");
    let err = assert_one_line_failure(&run(&["apply", &layer, &root]), 1);
    assert!(
        err.contains(r"x\n\x1b[2Jfake: ok\r\u009b31m"),
        "escapes missing: {err}"
    );
    // And in the text listing, one line per entry, escaped the same way.
    let o = run(&["ls", &layer]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), 2, "{out:?}");
    assert!(
        out.contains(r"x\n\x1b[2Jfake: ok\r\u009b31m/child"),
        "{out}"
    );
}

// ---- SOURCE_DATE_EPOCH ----

#[test]
fn source_date_epoch_from_the_environment_gives_the_same_bytes_as_the_option() {
    let w = Work::new();
    let lower = w.mkdir("lower");
    let upper = w.mkdir("upper");
    w.write("upper/f", b"new");
    let diff = |name: &str, flag: Option<&str>, env: Option<&str>| -> Vec<u8> {
        let out = w.s(name);
        let mut c = cli();
        c.args(["diff", "--compression", "none", &lower, &upper, "-o", &out]);
        if let Some(f) = flag {
            c.args(["--source-date-epoch", f]);
        }
        if let Some(e) = env {
            c.env("SOURCE_DATE_EPOCH", e);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        fs::read(&out).unwrap()
    };
    let by_flag = diff("flag.tar", Some("1000"), None);
    let by_env = diff("env.tar", None, Some("1000"));
    let unclamped = diff("none.tar", None, None);
    assert_eq!(by_env, by_flag);
    assert_ne!(by_env, unclamped, "the epoch did not clamp anything");
    // The option wins over the environment; empty means unset.
    assert_eq!(diff("both.tar", Some("1000"), Some("5")), by_flag);
    assert_eq!(diff("empty.tar", None, Some("")), unclamped);

    for bad in ["soon", "12.5", "1e9", "-", "99999999999999999999", " 1000"] {
        let o = cli()
            .args(["diff", &lower, &upper, "-o", &w.s("bad.tar")])
            .env("SOURCE_DATE_EPOCH", bad)
            .output()
            .unwrap();
        let err = assert_one_line_failure(&o, 2);
        assert!(err.contains("SOURCE_DATE_EPOCH"), "{bad:?}: {err}");
        assert!(o.stdout.is_empty());
    }
}

// ---- apply --diff-id ----

#[test]
fn apply_diff_id_right_passes_wrong_fails_with_one_line() {
    let w = Work::new();
    let tar = small_layer();
    let diff_id = sha256(&tar);
    let layer = w.write("l.tgz", &gzip(&tar, 1));
    let root = w.mkdir("root");
    let ok = run(&["apply", "--diff-id", &diff_id, &layer, &root]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let desc: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(desc["digest"], diff_id.as_str());

    let wrong = sha256(b"another layer");
    let o = run(&["apply", "--diff-id", &wrong, &layer, &w.mkdir("root2")]);
    let err = assert_one_line_failure(&o, 1);
    assert!(err.contains(&diff_id) && err.contains(&wrong), "{err}");
    assert!(err.contains("partly written"), "{err}");
    assert!(
        o.stdout.is_empty(),
        "a descriptor was printed for a failed apply"
    );

    // The same check through stdin.
    let o = cli()
        .args(["apply", "--diff-id", &wrong, "-", &w.mkdir("root3")])
        .stdin(fs::File::open(&layer).unwrap())
        .output()
        .unwrap();
    assert_one_line_failure(&o, 1);
}

#[test]
fn apply_diff_id_in_the_library_refuses_a_malformed_digest_before_writing() {
    let w = Work::new();
    let root = w.mkdir("root");
    let opts = layerdiff::ApplyOptions {
        expected_diff_id: Some("sha256:ABC".into()),
        ..Default::default()
    };
    let err = layerdiff::apply(Path::new(&root), &small_layer()[..], &opts).unwrap_err();
    assert_eq!(err.kind(), layerdiff::ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "wrote before refusing"
    );
}

// ---- ls ----

fn ls_json(layer: &str) -> Vec<serde_json::Value> {
    let o = run(&["ls", "--json", layer]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn every_kind_layer() -> Vec<u8> {
    let mut dev = Header::new(b'3', "dev/null");
    (dev.devmajor, dev.devminor, dev.mode) = (1, 3, 0o666);
    let mut blk = Header::new(b'4', "dev/sda");
    (blk.devmajor, blk.devminor) = (8, 0);
    let mut owned = Header::new(b'0', "owned");
    (owned.uid, owned.gid, owned.mode, owned.mtime) = (1000, 2000, 0o4755, 1_234_567_890);
    Tar::new()
        .dir("dev/")
        .entry(dev, b"")
        .entry(blk, b"")
        .entry(Header::new(b'6', "fifo"), b"")
        .entry(owned, b"data")
        .symlink("owned", "sym")
        .link("owned", "hard")
        .pax(&[
            ("SCHILY.xattr.user.one", &b"1"[..]),
            ("SCHILY.xattr.security.capability", &b"\x01\x02"[..]),
            ("mtime", &b"1500000000.25"[..]),
            ("atime", &b"1600000000"[..]),
        ])
        .file("with-xattrs", b"x")
        .gnu_long(b'L', format!("{}file", "long/".repeat(40)).as_bytes())
        .file("short-placeholder", b"long")
        .pax(&[("path", &b"bytes-\xff\xfe"[..])])
        .file("placeholder", b"")
        .file("dir/.wh.gone", b"")
        .file("dir/.wh..wh..opq", b"")
        .finish()
}

#[test]
fn ls_json_lists_every_kind_of_entry() {
    let w = Work::new();
    let layer = w.write("every.tgz", &gzip(&every_kind_layer(), 1));
    let got = ls_json(&layer);
    let names: Vec<&str> = got.iter().map(|e| e["name"].as_str().unwrap()).collect();
    let long = format!("{}file", "long/".repeat(40));
    assert_eq!(
        names,
        [
            "dev/",
            "dev/null",
            "dev/sda",
            "fifo",
            "owned",
            "sym",
            "hard",
            "with-xattrs",
            long.as_str(),
            "bytes-\u{fffd}\u{fffd}",
            "dir/.wh.gone",
            "dir/.wh..wh..opq"
        ]
    );
    let types: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "dir", "char", "block", "fifo", "file", "symlink", "hardlink", "file", "file", "file",
            "file", "file"
        ]
    );
    assert_eq!(
        (&got[1]["devmajor"], &got[1]["devminor"]),
        (&1.into(), &3.into())
    );
    assert_eq!(got[1]["typeflag"], "3");
    let owned = &got[4];
    assert_eq!(
        (&owned["uid"], &owned["gid"], &owned["mode"], &owned["size"]),
        (&1000.into(), &2000.into(), &0o4755.into(), &4.into())
    );
    assert_eq!(owned["mtime"], "1234567890");
    assert!(owned.get("atime").is_none());
    assert_eq!(got[5]["link"], "owned");
    assert_eq!(got[6]["link"], "owned");
    let x = &got[7];
    assert_eq!(x["mtime"], "1500000000.250000000");
    assert_eq!(x["atime"], "1600000000");
    assert_eq!(
        x["xattrs"],
        serde_json::json!(["security.capability", "user.one"])
    );
    assert_eq!(got[9]["nameBase64"], "Ynl0ZXMt//4=");
    assert_eq!(got[10]["whiteout"], "remove");
    assert_eq!(got[11]["whiteout"], "opaque");
    assert!(got[4].get("whiteout").is_none());
}

#[test]
fn ls_text_is_tar_tv_like() {
    let w = Work::new();
    let layer = w.write("every.tar", &every_kind_layer());
    let o = run(&["ls", &layer]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 12, "{out}");
    assert!(lines[0].starts_with("drwxr-xr-x 0/0 "), "{}", lines[0]);
    assert!(lines[1].starts_with("crw-rw-rw- 0/0 ") && lines[1].contains(" 1,3 "));
    assert!(lines[3].starts_with("prw-r--r-- "), "{}", lines[3]);
    assert!(
        lines[4].starts_with("-rwsr-xr-x 1000/2000          4 2009-02-13 23:31:30 owned"),
        "{}",
        lines[4]
    );
    assert!(lines[5].starts_with("lrwxrwxrwx") && lines[5].ends_with("sym -> owned"));
    assert!(lines[6].starts_with('h') && lines[6].ends_with("hard link to owned"));
    assert!(lines[7].ends_with("with-xattrs [xattrs: security.capability, user.one]"));
    assert!(lines[9].ends_with(r"bytes-\xff\xfe"), "{}", lines[9]);
    assert!(lines[10].ends_with("dir/.wh.gone [whiteout]"));
    assert!(lines[11].ends_with("dir/.wh..wh..opq [opaque whiteout]"));
}

#[test]
fn ls_reads_stdin_and_zstd() {
    let w = Work::new();
    let tar = every_kind_layer();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let want = ls_json(&w.write("plain.tar", &tar));
    let o = cli()
        .args(["ls", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&zst)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want);
}

/// Bad input: `ls` fails with the very line `apply` gives.
#[test]
fn ls_fails_on_bad_input_as_apply_does() {
    let w = Work::new();
    let good = Tar::new().file("f", &Rng::new(7).bytes(100_000)).finish();
    let gz = gzip(&good, 1);
    let mut bad_checksum = good.clone();
    bad_checksum[148] = b'7';
    let mut trailing_garbage = gz.clone();
    trailing_garbage.extend_from_slice(b"junk after the gzip member");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated-gzip", gz[..gz.len() / 2].to_vec()),
        ("gzip-trailing-garbage", trailing_garbage),
        ("bad-checksum", bad_checksum),
        ("truncated-data", good[..2000].to_vec()),
        ("truncated-header", good[..300].to_vec()),
        (
            "bad-pax",
            Tar::new()
                .pax(&[("mtime", &b"soon"[..])])
                .file("f", b"")
                .finish(),
        ),
        (
            "truncated-zstd",
            zstd::encode_all(&good[..], 3).unwrap()[..40].to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        let layer = w.write(&format!("{name}.layer"), &bytes);
        let ls = assert_one_line_failure(&run(&["ls", &layer]), 1);
        let root = w.mkdir(&format!("root-{name}"));
        let apply = assert_one_line_failure(&run(&["apply", &layer, &root]), 1);
        assert_eq!(ls, apply, "{name}");
    }
}

// ---- completions and man pages ----

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    for (shell, needle) in [
        ("bash", "_layerdiff()"),
        ("zsh", "#compdef layerdiff"),
        ("fish", "complete -c layerdiff"),
    ] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{}", stderr(&o));
        let script = String::from_utf8(o.stdout).unwrap();
        assert!(script.contains(needle), "{shell}: {needle:?} missing");
        assert!(
            script.contains("diff-id") && script.contains("progress"),
            "{shell}"
        );
    }
    let w = Work::new();
    let dir = w.mkdir("man1");
    let o = run(&["generate-man", &dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut pages: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "layerdiff-apply.1",
            "layerdiff-completions.1",
            "layerdiff-diff.1",
            "layerdiff-ls.1",
            "layerdiff.1"
        ]
    );
    let main = fs::read_to_string(w.p("man1/layerdiff.1")).unwrap();
    for needle in [
        ".TH layerdiff 1",
        ".SH \"EXIT STATUS\"",
        "SOURCE_DATE_EPOCH",
    ] {
        assert!(main.contains(needle), "{needle:?} missing:\n{main}");
    }
    let apply = fs::read_to_string(w.p("man1/layerdiff-apply.1")).unwrap();
    assert!(apply.contains("diff\\-id"), "{apply}");
}

// ---- the progress display, on a real terminal ----

/// Run `layerdiff ARGS` with stderr on a pseudo-terminal (and stdout into `stdout_file`);
/// returns what the terminal showed. `stdin` is redirected from a file or fed by `cat`.
fn on_terminal(args: &[&str], stdin: Option<(&str, bool)>, stdout_file: &Path) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut cmd = quote(BIN);
    for a in args {
        cmd.push(' ');
        cmd.push_str(&quote(a));
    }
    cmd.push_str(&format!(" >{}", quote(stdout_file.to_str().unwrap())));
    if let Some((file, piped)) = stdin {
        cmd = if piped {
            format!("cat {} | {cmd}", quote(file))
        } else {
            format!("{cmd} <{}", quote(file))
        };
    }
    // Wide enough that no line wraps.
    let cmd = format!("stty cols 200; {cmd}");
    let o = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs commands under a pseudo-terminal; install it");
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A gzip layer of about 24 MiB that does not compress, so an apply takes long enough to
/// draw.
fn big_layer(w: &Work) -> (String, u64) {
    let tar = Tar::new()
        .file("big", &Rng::new(1).bytes(24 << 20))
        .file("small", b"s")
        .finish();
    let gz = gzip(&tar, 1);
    (w.write("big.tgz", &gz), gz.len() as u64)
}

fn assert_descriptor(stdout_file: &Path) {
    let out = fs::read_to_string(stdout_file).unwrap();
    assert_eq!(out.lines().count(), 1, "stdout: {out:?}");
    let desc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(desc["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn progress_on_a_terminal_shows_total_and_percent_for_a_file() {
    let w = Work::new();
    let (layer, size) = big_layer(&w);
    // indicatif's HumanBytes, as the bar shows the total.
    let total = format!("{:.2} MiB", size as f64 / (1 << 20) as f64);
    let out = w.p("out.json");
    for stdin in [None, Some((layer.as_str(), false))] {
        let args = match stdin {
            None => vec!["apply", layer.as_str()],
            Some(_) => vec!["apply", "-"],
        };
        let root = w.mkdir(&format!("root-{}", stdin.is_some()));
        let mut args = args;
        args.push(&root);
        let shown = on_terminal(&args, stdin, &out);
        assert!(
            shown.contains(&format!("/{total} (")),
            "no total {total}: {shown:?}"
        );
        assert!(shown.contains("%)"), "no percent: {shown:?}");
        assert!(
            shown.contains("apply: 2 entries, "),
            "no summary: {shown:?}"
        );
        assert_descriptor(&out);
    }
}

#[test]
fn progress_from_a_pipe_and_for_diff_counts_entries_bytes_and_ratio() {
    let w = Work::new();
    let (layer, _) = big_layer(&w);
    let out = w.p("out.json");
    let root = w.mkdir("root");
    let shown = on_terminal(&["apply", "-", &root], Some((&layer, true)), &out);
    assert!(
        shown.contains(" entries, ") && shown.contains(" read, "),
        "{shown:?}"
    );
    assert!(!shown.contains("%)"), "a pipe has no total: {shown:?}");
    assert!(shown.contains("apply: 2 entries, "), "{shown:?}");
    assert_descriptor(&out);

    let lower = w.mkdir("lower");
    let upper = w.mkdir("upper");
    w.write("upper/big", &Rng::new(3).bytes(8 << 20));
    w.write("upper/zeros", &vec![0; 8 << 20]);
    let layer_out = w.s("diff.tgz");
    let shown = on_terminal(&["diff", &lower, &upper, "-o", &layer_out], None, &out);
    assert!(shown.contains("diff: 2 changes, "), "{shown:?}");
    assert!(
        shown.contains(" written (") && shown.contains("x) in "),
        "{shown:?}"
    );
    assert_descriptor(&out);
}

#[test]
fn progress_never_quiet_and_no_terminal_silence_it() {
    let w = Work::new();
    let (layer, _) = big_layer(&w);
    let out = w.p("out.json");
    for flag in ["--progress=never", "--quiet", "-q"] {
        let root = w.mkdir(&format!("root{flag}"));
        let shown = on_terminal(&["apply", flag, &layer, &root], None, &out);
        assert_eq!(shown, "", "{flag}: {shown:?}");
        assert_descriptor(&out);
    }
    // stderr a pipe: nothing on it but errors, unless asked.
    let o = run(&["apply", &layer, &w.mkdir("root-pipe")]);
    assert!(o.status.success());
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let o = run(&[
        "apply",
        "--progress=always",
        &layer,
        &w.mkdir("root-always"),
    ]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("%)") && err.contains("apply: 2 entries"),
        "{err:?}"
    );
    // The display never goes to stdout.
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 1);
}
