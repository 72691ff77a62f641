//! How `tasklane` fails: one line on stderr and an exit code scripts can
//! rely on (0 ok, 1 runtime failure, 2 usage error, 3 timeout).

use std::fmt::Display;
use std::process::ExitCode;

use clap::error::ErrorKind;

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Bad input: arguments, URL, endpoint id, unreadable file. Exit 2.
    Usage(String),
    /// Something failed while running. Exit 1.
    Runtime(String),
    /// A deadline passed first. Exit 3.
    Timeout(String),
    /// Bad configuration: every problem, each on a line of its own. Exit 2.
    Problems(Vec<String>),
    /// The command said all there is on stdout; exit with this code.
    Quiet(u8),
}

impl Failure {
    /// A runtime failure with `context` and its cause.
    pub fn runtime(context: impl Display, cause: impl Display) -> Self {
        Failure::Runtime(format!("{context}: {cause}"))
    }

    /// Prints the one-line message and gives the exit code.
    pub fn report(self) -> ExitCode {
        let (code, msg) = match self {
            Failure::Usage(m) => (2, m),
            Failure::Runtime(m) => (1, m),
            Failure::Timeout(m) => (3, m),
            Failure::Quiet(code) => return ExitCode::from(code),
            Failure::Problems(lines) => {
                for line in lines {
                    eprintln!("tasklane: {}", one_line(&line));
                }
                return ExitCode::from(2);
            }
        };
        eprintln!("tasklane: {}", one_line(&msg));
        ExitCode::from(code)
    }
}

/// Prints `lines` on stdout. A reader that went away (`| head`) ends the
/// command quietly with exit 0 instead of a panic.
pub fn print_lines(lines: impl IntoIterator<Item = String>) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        match writeln!(out, "{line}") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Err(Failure::Quiet(0)),
            Err(e) => return Err(Failure::Runtime(format!("cannot write to stdout: {e}"))),
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Quiet(0)),
        _ => Ok(()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Help and version go to stdout as clap renders them; every other parse
/// error becomes one line and exit code 2.
pub fn clap_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(e.exit_code() as u8)
        }
        _ => {
            // The message is the first paragraph (a missing argument lists
            // the arguments on the lines after the first); usage and tips follow.
            let rendered = e.render().to_string();
            let para: Vec<&str> = rendered.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let msg = para.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            Failure::Usage(format!("{msg} (see tasklane --help)")).report()
        }
    }
}
