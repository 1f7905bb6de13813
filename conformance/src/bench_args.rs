//! Command-line arguments of the benchmark binaries (`codec-bench`, `session-bench`,
//! `grid-bench`): one way to read values and one error shape, the tool's name, what is
//! wrong and the usage, with exit code 2.
//!
//! A binary reads its options into a `Result<_, ExitCode>`: `Err` carries the code to
//! exit with, after the message (or the usage, for `--help`) was printed.
//!
//! ```
//! use grid_conformance::bench_args::Args;
//! let argv = ["--seconds", "0.5", "--repeat", "3"].map(String::from);
//! let mut a = Args::new("demo-bench", "usage: demo-bench [--seconds N] [--repeat N]", argv);
//! let (mut seconds, mut repeat) = (2.0, 1);
//! while let Some(arg) = a.next() {
//!     match arg.as_str() {
//!         "--seconds" => seconds = a.seconds(&arg).unwrap(),
//!         "--repeat" => repeat = a.count(&arg).unwrap(),
//!         other => panic!("{other}"),
//!     }
//! }
//! assert_eq!((seconds, repeat), (0.5, 3));
//! ```

use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;

/// The arguments after the program's name, read in order.
pub struct Args<I> {
    tool: &'static str,
    usage: &'static str,
    args: I,
}

impl Args<std::iter::Skip<std::env::Args>> {
    /// The process's own arguments.
    pub fn from_env(tool: &'static str, usage: &'static str) -> Self {
        Args::new(tool, usage, std::env::args().skip(1))
    }
}

impl<I: Iterator<Item = String>> Args<I> {
    /// `args` read on behalf of `tool`, whose usage line is `usage`.
    pub fn new(
        tool: &'static str,
        usage: &'static str,
        args: impl IntoIterator<IntoIter = I>,
    ) -> Self {
        Args {
            tool,
            usage,
            args: args.into_iter(),
        }
    }

    /// The next argument, or `None` after the last.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<String> {
        self.args.next()
    }

    /// The value after `flag`, parsed and accepted by `ok`; otherwise the error says
    /// that `flag` needs `what`.
    pub fn value<T: FromStr>(
        &mut self,
        flag: &str,
        what: &str,
        ok: impl Fn(&T) -> bool,
    ) -> Result<T, ExitCode> {
        match self.args.next().and_then(|s| s.parse::<T>().ok()) {
            Some(v) if ok(&v) => Ok(v),
            _ => Err(self.fail(format_args!("{flag} needs {what}"))),
        }
    }

    /// A positive, finite number (of seconds) after `flag`.
    pub fn seconds(&mut self, flag: &str) -> Result<f64, ExitCode> {
        self.value(flag, "a positive number", |s: &f64| {
            *s > 0.0 && s.is_finite()
        })
    }

    /// A positive count after `flag`.
    pub fn count<T: FromStr + PartialOrd + From<u8>>(&mut self, flag: &str) -> Result<T, ExitCode> {
        self.value(flag, "a positive count", |n: &T| *n > T::from(0))
    }

    /// Any text after `flag`.
    pub fn text(&mut self, flag: &str) -> Result<String, ExitCode> {
        self.value(flag, "a text", |_: &String| true)
    }

    /// The comma-separated list after `flag`, each entry turned into a value by `item`,
    /// whose error (what is wrong with the entry) ends the reading.
    pub fn list<T>(
        &mut self,
        item: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ExitCode> {
        let list = self.args.next().unwrap_or_default();
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| item(s).map_err(|why| self.fail(why)))
            .collect()
    }

    /// Prints `why` with the usage and gives the exit code for a bad argument.
    pub fn fail(&self, why: impl Display) -> ExitCode {
        eprintln!("{}: {why}; {}", self.tool, self.usage);
        ExitCode::from(2)
    }

    /// Prints the usage and gives the exit code for `--help`.
    pub fn help(&self) -> ExitCode {
        println!("{}", self.usage);
        ExitCode::SUCCESS
    }

    /// The error for an argument the tool does not know.
    pub fn unknown(&self, arg: &str) -> ExitCode {
        self.fail(format_args!("unknown argument {arg:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args<std::vec::IntoIter<String>> {
        Args::new(
            "t",
            "usage: t",
            v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn seconds_must_be_positive_and_finite() {
        assert_eq!(args(&["1.5"]).seconds("--seconds"), Ok(1.5));
        for bad in ["0", "-1", "inf", "NaN", "x"] {
            assert!(args(&[bad]).seconds("--seconds").is_err(), "{bad}");
        }
        assert!(args(&[]).seconds("--seconds").is_err(), "a missing value");
    }

    #[test]
    fn counts_must_be_positive_integers() {
        assert_eq!(args(&["3"]).count::<usize>("--repeat"), Ok(3));
        assert_eq!(args(&["7"]).count::<u64>("--frames"), Ok(7));
        for bad in ["0", "-2", "1.5", ""] {
            assert!(args(&[bad]).count::<usize>("--repeat").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lists_skip_empty_entries_and_stop_at_a_bad_one() {
        let even = |s: &str| match s.parse::<u32>() {
            Ok(n) if n % 2 == 0 => Ok(n),
            _ => Err(format!("{s} is not even")),
        };
        assert_eq!(args(&["2,,4,"]).list(even), Ok(vec![2, 4]));
        assert_eq!(args(&[]).list(even), Ok(vec![]));
        assert!(args(&["2,3"]).list(even).is_err());
    }

    #[test]
    fn arguments_come_in_order_and_text_takes_anything() {
        let mut a = args(&["--only", "crc single", "--json"]);
        assert_eq!(a.next().as_deref(), Some("--only"));
        assert_eq!(a.text("--only").as_deref(), Ok("crc single"));
        assert_eq!(a.next().as_deref(), Some("--json"));
        assert_eq!(a.next(), None);
        assert!(a.text("--only").is_err(), "nothing after the flag");
        assert_eq!(a.unknown("--x"), ExitCode::from(2));
        assert_eq!(a.help(), ExitCode::SUCCESS);
    }
}
