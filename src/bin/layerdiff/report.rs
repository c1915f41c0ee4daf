//! What the CLI tells its caller: exit status, one-line errors, stdout writes that fail
//! cleanly, the version line, and the man pages' extra sections.

use std::fmt::Display;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

/// Exit status of a usage error (as clap and most Unix tools use).
const EXIT_USAGE: u8 = 2;

/// Why the CLI stops; each is one line on stderr.
#[derive(Debug)]
pub enum Failure {
    /// The command line (or the environment it reads) is wrong: exit 2.
    Usage(String),
    /// The work failed: exit 1.
    Failed(String),
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Failure::Failed(msg)
    }
}

impl From<&str> for Failure {
    fn from(msg: &str) -> Self {
        Failure::Failed(msg.to_string())
    }
}

impl Failure {
    /// Print the one line and give the exit status.
    pub fn report(self) -> ExitCode {
        let (msg, code) = match self {
            Failure::Usage(m) => (m, EXIT_USAGE),
            Failure::Failed(m) => (m, 1),
        };
        // A failing stderr leaves nothing else to tell.
        // The core already quotes names that need it (as Go's %q), so backslashes stay as
        // they are; anything that would still break the line or drive the terminal is escaped.
        let _ = writeln!(
            io::stderr().lock(),
            "layerdiff: {}",
            escape_with(msg.as_bytes(), false)
        );
        ExitCode::from(code)
    }
}

/// `bytes` as one line of printable text: backslash, control characters (C0, DEL, C1) and
/// bytes that are not UTF-8 are escaped (`\\`, `\n`, `\t`, `\r`, `\xHH`, `\uHHHH`, as Go's %q), so a
/// name out of a layer can neither break the line nor drive the terminal.
pub fn escape(bytes: &[u8]) -> String {
    escape_with(bytes, true)
}

/// [`escape`], with backslashes escaped or kept as they are.
fn escape_with(bytes: &[u8], backslash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' if backslash => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Handle clap's verdict on the command line: help and version go to stdout (exit 0); a
/// usage error becomes one line on stderr a script can read (exit 2), clap's tips kept on it.
pub fn exit_for_clap(e: clap::Error, cmd: &clap::Command) -> ExitCode {
    use clap::error::ErrorKind;
    if !e.use_stderr() {
        let mut text = e.render().to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        return match write_stdout(text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => f.report(),
        };
    }
    // The subcommand asked for, to point at its help.
    let sub = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|a| cmd.find_subcommand(a).is_some());
    let command = match &sub {
        Some(s) => format!("layerdiff {s}"),
        None => "layerdiff".to_string(),
    };
    let msg = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let subs: Vec<&str> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name())
            .collect();
        format!("a subcommand is needed: one of {}", subs.join(", "))
    } else {
        // clap's message, its tips and lists, up to the usage summary, on one line.
        let mut msg = String::new();
        for line in e.render().to_string().lines().map(str::trim) {
            if line.starts_with("Usage:") || line.starts_with("For more information") {
                break;
            }
            if line.is_empty() {
                continue;
            }
            if !msg.is_empty() {
                msg.push_str(if msg.ends_with(':') { " " } else { "; " });
            }
            msg.push_str(line.strip_prefix("error: ").unwrap_or(line));
        }
        msg
    };
    Failure::Usage(format!("{msg} (see '{command} --help')")).report()
}

/// The `--version` line: this program's version and the library's it is built with.
pub fn version_line() -> String {
    format!(
        "{} (library liblayerdiff {})",
        env!("CARGO_PKG_VERSION"),
        layerdiff::VERSION
    )
}

/// SOURCE_DATE_EPOCH from the environment, used when `--source-date-epoch` is absent: unset
/// or empty means none; anything but a whole number of seconds (as `date +%s` prints) is a
/// usage error, as the reproducible-builds specification asks.
pub fn source_date_epoch_from_env() -> Result<Option<i64>, Failure> {
    let Some(raw) = std::env::var_os("SOURCE_DATE_EPOCH") else {
        return Ok(None);
    };
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Failure::Usage(format!(
            "SOURCE_DATE_EPOCH={:?} in the environment is not a whole number of seconds since 1970",
            raw
        ))
    };
    let s = raw.to_str().ok_or_else(bad)?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map(Some).map_err(|_| bad())
}

/// Write all of `bytes` to stdout and flush; a closed pipe or a full disk is one clear
/// failure, not a panic.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_failure)
}

/// `value` and a newline on stdout.
pub fn print_line(value: &impl Display) -> Result<(), Failure> {
    write_stdout(format!("{value}\n").as_bytes())
}

pub fn stdout_failure(e: io::Error) -> Failure {
    Failure::Failed(format!("write to stdout: {e}"))
}

/// The layer to read: a file, or stdin for `-` (as a `File` on a duplicate of fd 0, so both
/// are read the same way and a redirected file's size is known).
pub fn open_input(path: &Path) -> Result<File, Failure> {
    if path.as_os_str() == "-" {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("duplicate stdin: {e}"))?;
        return Ok(fd.into());
    }
    File::open(path).map_err(|e| Failure::Failed(format!("open {}: {e}", path.display())))
}

/// The sections `--help` ends with and the man page carries: (title, [(term, description)]).
const SECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "EXIT STATUS",
        &[
            ("0", "Success."),
            ("1", "Failure: one line on stderr says what failed."),
            (
                "2",
                "Usage error (bad arguments or environment): one line on stderr.",
            ),
        ],
    ),
    (
        "ENVIRONMENT",
        &[(
            "SOURCE_DATE_EPOCH",
            "diff: clamp mtimes to these seconds since 1970 when --source-date-epoch is not \
             given (the option wins; unset or empty means no clamping; any other value that \
             is not a whole number is a usage error).",
        )],
    ),
    (
        "OUTPUT",
        &[
            (
                "stdout",
                "diff and apply print the layer's descriptor as one JSON object; ls prints \
                 the listing. Nothing else is written there.",
            ),
            (
                "stderr",
                "Errors, and with --progress the progress display and a summary line when \
                 done. --progress auto (the default) draws only when stderr is a terminal.",
            ),
        ],
    ),
];

/// [`SECTIONS`] as the text `--help` ends with.
pub fn after_help() -> String {
    let mut s = String::new();
    for (title, items) in SECTIONS {
        let mut title = title.to_lowercase();
        title[..1].make_ascii_uppercase();
        s.push_str(&format!("{title}:\n"));
        for (term, text) in *items {
            s.push_str(&format!("  {term:<18} {text}\n"));
        }
        s.push('\n');
    }
    s.truncate(s.trim_end().len());
    s
}

/// Man pages for the command and each visible subcommand (`layerdiff.1`, `layerdiff-diff.1`,
/// ...) into `dir`, generated from the command line definition; the main page also carries
/// [`SECTIONS`].
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<(), Failure> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let write = |path: &Path, page: &[u8]| {
        std::fs::write(path, page).map_err(|e| format!("write {}: {e}", path.display()))
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone());
        let mut page = Vec::new();
        man.render(&mut page).map_err(|e| e.to_string())?;
        write(&dir.join(man.get_filename()), &page)?;
    }
    // The main page without clap's after-help (SECTIONS replace it, with their own titles).
    let top = cmd.clone().after_long_help(None::<&str>);
    let man = clap_mangen::Man::new(top);
    let mut page = Vec::new();
    let render = |page: &mut Vec<u8>| -> io::Result<()> {
        man.render_title(page)?;
        man.render_name_section(page)?;
        man.render_synopsis_section(page)?;
        man.render_description_section(page)?;
        man.render_options_section(page)?;
        man.render_subcommands_section(page)?;
        let mut roff = roff::Roff::new();
        for (title, items) in SECTIONS {
            roff.control("SH", [*title]);
            for (term, text) in *items {
                roff.control("TP", []);
                roff.text([roff::bold(*term)]);
                roff.text([roff::roman(*text)]);
            }
        }
        roff.to_writer(page)?;
        man.render_version_section(page)
    };
    render(&mut page).map_err(|e| e.to_string())?;
    write(&dir.join(man.get_filename()), &page)?;
    Ok(())
}
