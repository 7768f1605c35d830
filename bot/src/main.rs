//! `iq720-bot` entry point.

use clap::Parser;
use iq720_bot::cli::{Cli, Command};
use iq720_bot::{backup, config::Config, restore_s3, server};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    iq720_bot::chaos::set(cli.report_version, cli.fault);
    iq720_bot::chaos::set_schema_ahead(cli.schema_ahead);
    match cli.command {
        Command::Version => {
            println!("iq720-bot {}", iq720_bot::chaos::version());
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => match serde_yaml::to_string(&c) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e.to_string()),
            },
            Err(e) => fail(2, &e.to_string()),
        },
        Command::Run(args) => match server::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(server::RunError::Config(e)) => fail(2, &e.to_string()),
            Err(e) => fail(1, &e.to_string()),
        },
        Command::Backup { data_dir, out } => {
            let db = data_dir.join(iq720_bot::store::DB_FILE);
            if !db.exists() {
                return fail(1, &format!("no database at {}", db.display()));
            }
            let work = out
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_else(std::env::temp_dir);
            let work = if work.as_os_str().is_empty() {
                std::path::PathBuf::from(".")
            } else {
                work
            };
            match backup::create_archive(&db, &out, &work) {
                Ok((m, _)) => print_json(&m),
                Err(e) => fail(1, &e.to_string()),
            }
        }
        Command::Restore {
            from,
            s3,
            data_dir,
            force,
            if_schema_too_new,
        } => match from {
            Some(from) => match backup::restore(&from, &data_dir, force) {
                Ok(m) => print_json(&m),
                Err(e) => fail(1, &e.to_string()),
            },
            None => {
                if s3.bucket.is_none() {
                    return fail(2, "--s3-bucket is required with --s3-key");
                }
                let done = if if_schema_too_new {
                    restore_s3::replace_if_schema_too_new(&s3, &data_dir)
                } else {
                    restore_s3::restore_from_s3(&s3, &data_dir, force)
                };
                match done {
                    Ok(report) => {
                        eprintln!(
                            "restore {}: {}",
                            report.result,
                            report
                                .reason
                                .clone()
                                .unwrap_or_else(|| format!("{} restored", report.key))
                        );
                        print_line(&report)
                    }
                    Err(e) => fail(
                        1,
                        &format!("restore of {} failed: {e}", s3.key.unwrap_or_default()),
                    ),
                }
            }
        },
        Command::RestoreDrill { s3, work_dir } => {
            if s3.bucket.is_none() || s3.key.is_none() {
                return fail(2, "--s3-bucket and --s3-key are required");
            }
            let report = restore_s3::drill(&s3, &work_dir);
            let ok = report.result == "succeeded";
            let code = print_line(&report);
            if ok { code } else { ExitCode::from(1) }
        }
        Command::VerifyBackup { file } => {
            let work = std::env::temp_dir().join(format!("iq720-verify-{}", std::process::id()));
            let res = backup::verify_archive(&file, &work);
            let _ = std::fs::remove_dir_all(&work);
            match res {
                Ok((m, _)) => print_json(&m),
                Err(e) => fail(1, &e.to_string()),
            }
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

/// One compact JSON line (the last line of the output, read by the operator).
fn print_line<T: serde::Serialize>(v: &T) -> ExitCode {
    match serde_json::to_string(v) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}
