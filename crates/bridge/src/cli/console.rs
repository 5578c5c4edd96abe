//! `bridge console`: what setting up the operator console needs.

use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Subcommand)]
pub enum ConsoleCommand {
    /// Read a password on standard input and print its argon2id hash, for
    /// an account's `password_hash` in [[console.accounts]].
    HashPassword,
}

/// Shortest password accepted for a console account.
const MIN_PASSWORD_CHARS: usize = 12;

pub fn run(cmd: ConsoleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConsoleCommand::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("password (the line is shown as you type; pipe it in to avoid that):");
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(
                password.chars().count() >= MIN_PASSWORD_CHARS,
                "the password must have at least {MIN_PASSWORD_CHARS} characters"
            );
            let hash =
                bridge_console::password::hash_password(password).map_err(anyhow::Error::msg)?;
            println!("{hash}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
