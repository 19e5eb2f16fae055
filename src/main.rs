//! The `cdn-invalidator` command line: serve, migrate, user add, assets import.

use anyhow::Context;
use cdn_invalidator::config::{Config, DEFAULT_DATABASE_URL, ServeArgs};
use cdn_invalidator::domain::catalogue;
use cdn_invalidator::startup::{Application, open_store};
use cdn_invalidator::store::Role;
use cdn_invalidator::{password, routes::check_username};
use clap::{Parser, Subcommand};
use std::io::BufRead;

#[derive(Parser)]
#[command(
    name = "cdn-invalidator",
    version,
    about = "Invalidate CDN-cached URLs of your asset catalogue"
)]
struct Cli {
    /// Database URL (SQLite file by default; created and migrated on start).
    #[arg(long = "database", env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Parser)]
struct ServeOnly {
    #[command(flatten)]
    args: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web application (the default).
    Serve(ServeArgs),
    /// Create or upgrade the database schema.
    Migrate,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the asset catalogue.
    Assets {
        #[command(subcommand)]
        command: AssetsCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account; the password is read as one line from standard input.
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "user"], default_value = "user")]
        role: String,
    },
}

#[derive(Subcommand)]
enum AssetsCommand {
    /// Import a CSV catalogue (`id,name,type`); one bad row rejects the whole file.
    Import { file: std::path::PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,actix_server=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    // A bare `cdn-invalidator` serves with options from the environment and defaults.
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeOnly::parse_from(["cdn-invalidator"]).args));
    match command {
        Command::Serve(args) => {
            let config = Config::from_args(args, cli.database);
            let app = Application::build(config.clone()).await?;
            tracing::info!(
                "listening on http://{}",
                config.listen.replace(":0", &format!(":{}", app.port()))
            );
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            open_store(&cli.database).await?;
            println!("database is up to date");
        }
        Command::User {
            command: UserCommand::Add { name, role },
        } => {
            check_username(&name).map_err(anyhow::Error::msg)?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let pw = line.trim_end_matches(['\r', '\n']).to_string();
            password::check_new(&pw).map_err(anyhow::Error::msg)?;
            let store = open_store(&cli.database).await?;
            let hash = password::hash(&pw)?;
            let role = Role::parse(&role).context("role must be admin or user")?;
            store.create_user(&name, &hash, role).await?;
            println!("user {name} added as {}", role.as_str());
        }
        Command::Assets {
            command: AssetsCommand::Import { file },
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let rows = match catalogue::parse(&bytes) {
                Ok(rows) => rows,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}: {e}", file.display());
                    }
                    anyhow::bail!("nothing imported: {} errors", errors.len());
                }
            };
            let store = open_store(&cli.database).await?;
            store.upsert_assets(&rows).await?;
            println!("imported {} assets", rows.len());
        }
    }
    Ok(())
}
