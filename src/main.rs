//! The `cdn-invalidator` command line: serve, migrate, user add, assets import.

mod client;

use anyhow::Context;
use cdn_invalidator::config::{Config, DEFAULT_DATABASE_URL, ServeArgs};
use cdn_invalidator::crypto::MasterKey;
use cdn_invalidator::domain::catalogue;
use cdn_invalidator::domain::username::check_username;
use cdn_invalidator::password;
use cdn_invalidator::startup::{
    Application, key_file_for, master_key, open_store, open_unlocked_store, pending_key_file,
};
use cdn_invalidator::store::{Role, redact_url};
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
    /// Log lines as text for people, or as JSON objects (one a line) for log collectors.
    #[arg(long, env = "CDN_INVALIDATOR_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text", global = true)]
    log_format: String,
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
    /// Create or upgrade the database schema (and encrypt plain-text credentials when the
    /// key is at hand: the secret, or the key file of an SQLite database).
    Migrate {
        #[arg(long, env = "CDN_INVALIDATOR_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Re-encrypt stored provider credentials under a new key.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Copy every user, setting, asset and invalidation into another, empty database, e.g.
    /// from the embedded SQLite file to PostgreSQL. Stop the app first.
    Copy {
        /// The target database URL (migrated here; must have no users yet).
        #[arg(long)]
        to: String,
        /// The secret of the source database (unset: its key file, for SQLite).
        #[arg(long, env = "CDN_INVALIDATOR_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// The secret the target will run with (required for PostgreSQL; unset for an SQLite
        /// target: its key file).
        #[arg(long, env = "CDN_INVALIDATOR_TARGET_SECRET", hide_env_values = true)]
        to_secret: Option<String>,
    },
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
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Invalidate through a running server's JSON API (for publishing pipelines). Exit code:
    /// 0 all cleared (or queued, without --wait), 1 some URL failed, 2 the list was refused.
    Invalidate {
        #[command(flatten)]
        api: ApiArgs,
        /// Asset IDs, expanded by the server's template as Invalidate CDN does.
        #[arg(long, num_args = 1.., conflicts_with = "urls_file", required_unless_present = "urls_file")]
        assets: Vec<String>,
        /// A file of URLs, one a line; `-` reads standard input.
        #[arg(long)]
        urls_file: Option<std::path::PathBuf>,
        /// With --assets: `tags` or `prefixes` clears every cached variant of the assets, as
        /// an admin mapped assets to the cache; `urls` (the default) the template's URLs.
        #[arg(long, requires = "assets", value_parser = ["urls", "tags", "prefixes"])]
        scope: Option<String>,
        /// Makes a repeated run return the first invalidation instead of queuing another.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the invalidation to the end (progress on a terminal), then list failed URLs.
        #[arg(long)]
        wait: bool,
    },
    /// Show an invalidation through a running server's JSON API.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        id: i64,
        /// Follow it to the end.
        #[arg(long)]
        wait: bool,
    },
}

/// Where the JSON API is and the token to use.
#[derive(clap::Args)]
struct ApiArgs {
    /// The app's address, e.g. https://invalidator.example.com.
    #[arg(long, env = "CDN_INVALIDATOR_SERVER")]
    server: String,
    /// An API token (see the API tokens page).
    #[arg(long, env = "CDN_INVALIDATOR_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user; prints it once (only its hash is stored).
    Create {
        #[arg(long)]
        user: String,
        /// What the token is for, as its owner's API tokens page lists it.
        #[arg(long)]
        name: String,
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
enum SecretCommand {
    /// Re-encrypt the credentials with a new secret (`--new-secret`), or, for SQLite without
    /// a secret, with a newly generated key file. Stop every instance first; start them again
    /// with the new secret.
    Rotate {
        /// The current secret (unset: the SQLite database's key file).
        #[arg(long, env = "CDN_INVALIDATOR_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// The new secret, at least 32 bytes.
        #[arg(long, env = "CDN_INVALIDATOR_NEW_SECRET", hide_env_values = true)]
        new_secret: Option<String>,
    },
}

#[derive(Subcommand)]
enum AssetsCommand {
    /// Import a CSV catalogue (`id,name,type`); one bad row rejects the whole file.
    Import { file: std::path::PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,sqlx=warn,actix_server=warn".into())
    };
    // Logs go to stderr: stdout carries what a command prints (a token, an invalidation id).
    if cli.log_format == "json" {
        // Each line a JSON object with the request's span (its request_id) in it.
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_env_filter(filter())
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter())
            .init();
    }
    // A bare `cdn-invalidator` serves with options from the environment and defaults.
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeOnly::parse_from(["cdn-invalidator"]).args));
    match command {
        Command::Serve(args) => {
            let config = Config::from_args(args, cli.database).map_err(anyhow::Error::msg)?;
            let app = Application::build(config.clone()).await?;
            tracing::info!(
                "listening on http://{}",
                config.listen.replace(":0", &format!(":{}", app.port()))
            );
            app.run_until_stopped().await?;
        }
        Command::Migrate { secret } => {
            let key_at_hand = secret.is_some() || key_file_for(&cli.database).is_some();
            if key_at_hand {
                open_unlocked_store(&cli.database, secret.as_deref()).await?;
            } else {
                open_store(&cli.database).await?;
                println!(
                    "credentials are encrypted at the first start with CDN_INVALIDATOR_SECRET"
                );
            }
            println!("database is up to date");
        }
        Command::Secret {
            command: SecretCommand::Rotate { secret, new_secret },
        } => rotate_secret(&cli.database, secret, new_secret).await?,
        Command::Copy {
            to,
            secret,
            to_secret,
        } => {
            let (source, _) = open_unlocked_store(&cli.database, secret.as_deref()).await?;
            let target_key = master_key(&to, to_secret.as_deref())?;
            let target = open_store(&to).await?;
            let report = source.copy_into(&target, &target_key).await?;
            for (table, rows) in &report.tables {
                println!("{table}: {rows} rows");
            }
            println!(
                "copied into {}; {} provider credentials re-encrypted for it",
                redact_url(&to),
                report.credentials
            );
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
        Command::Invalidate {
            api,
            assets,
            urls_file,
            scope,
            idempotency_key,
            wait,
        } => {
            let source = match urls_file {
                Some(path) => client::Source::UrlsFile(path),
                None => client::Source::Assets(assets, scope),
            };
            let code =
                client::invalidate(&api.server, &api.token, source, idempotency_key, wait).await?;
            std::process::exit(code);
        }
        Command::Status { api, id, wait } => {
            let code = client::status(&api.server, &api.token, id, wait).await?;
            std::process::exit(code);
        }
        Command::Token {
            command: TokenCommand::Create { user, name },
        } => {
            let store = open_store(&cli.database).await?;
            let owner = store
                .find_user_by_name(&user)
                .await?
                .with_context(|| format!("there is no user {user}"))?;
            anyhow::ensure!(!owner.disabled, "user {user} is disabled");
            let token = cdn_invalidator::invalidations::create_api_token(&store, &owner, &name)
                .await?
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "API token \"{}\" created for {user}; it is shown this once:",
                name.trim()
            );
            println!("{token}");
        }
        Command::Assets {
            command: AssetsCommand::Import { file },
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut reading = Progress::new("reading", bytes.len() as u64, Unit::Bytes);
            let parsed = catalogue::parse_with_progress(&bytes, |done| reading.set(done as u64));
            reading.finish();
            // The rows own their text; the file is not needed any more.
            drop(bytes);
            let rows = match parsed {
                Ok(rows) => rows,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}: {e}", file.display());
                    }
                    anyhow::bail!("nothing imported: {} errors", errors.len());
                }
            };
            let store = open_store(&cli.database).await?;
            let mut writing = Progress::new("writing", rows.len() as u64, Unit::Rows);
            let report = store
                .import_catalogue(&rows, |done| writing.set(done))
                .await?;
            writing.finish();
            println!(
                "imported {} assets: {} new, {} changed, {} unchanged",
                report.read, report.new, report.changed, report.unchanged
            );
        }
    }
    Ok(())
}

/// What a [`Progress`] counts.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Rows,
    Urls,
}

/// Progress of a long step on stderr: a bar on a terminal, otherwise (logs, pipes) a line
/// every few seconds and one at the end.
struct Progress {
    label: &'static str,
    total: u64,
    unit: Unit,
    bar: Option<indicatif::ProgressBar>,
    done: u64,
    last_line: std::time::Instant,
}

impl Progress {
    const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    fn new(label: &'static str, total: u64, unit: Unit) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let counts = match unit {
                Unit::Bytes => "{binary_bytes}/{binary_total_bytes}",
                Unit::Rows => "{human_pos}/{human_len} rows",
                Unit::Urls => "{human_pos}/{human_len} URLs",
            };
            let style = indicatif::ProgressStyle::with_template(&format!(
                "{{prefix:>8}} [{{bar:40}}] {counts} {{elapsed}}"
            ))
            .expect("a valid progress template")
            .progress_chars("=> ");
            indicatif::ProgressBar::new(total)
                .with_style(style)
                .with_prefix(label)
        });
        Self {
            label,
            total,
            unit,
            bar,
            done: 0,
            last_line: std::time::Instant::now(),
        }
    }

    fn set(&mut self, done: u64) {
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= Self::LINE_EVERY => self.line(),
            None => {}
        }
    }

    fn line(&mut self) {
        let unit = match self.unit {
            Unit::Bytes => "bytes",
            Unit::Rows => "rows",
            Unit::Urls => "URLs",
        };
        eprintln!("{}: {} of {} {unit}", self.label, self.done, self.total);
        self.last_line = std::time::Instant::now();
    }

    fn finish(mut self) {
        match self.bar.take() {
            Some(bar) => {
                bar.finish();
                // The bar leaves the cursor at its end.
                eprintln!();
            }
            None => self.line(),
        }
    }
}

/// `secret rotate`: re-encrypts every credential under the new key in one transaction. With a
/// key file, the new key is written beside the old one first and replaces it only once the
/// database holds values encrypted with it.
async fn rotate_secret(
    database: &str,
    secret: Option<String>,
    new_secret: Option<String>,
) -> anyhow::Result<()> {
    let (mut store, _) = open_unlocked_store(database, secret.as_deref()).await?;
    match (new_secret, key_file_for(database)) {
        (Some(new_secret), _) => {
            let new = MasterKey::from_secret(&new_secret).context("the new secret")?;
            let count = store.rotate_key(new).await?;
            println!(
                "{count} credentials re-encrypted; start every instance with the new CDN_INVALIDATOR_SECRET"
            );
        }
        (None, Some(path)) if secret.is_none() => {
            let new = MasterKey::generate();
            let pending = pending_key_file(&path);
            new.write_to(&pending)?;
            let count = store.rotate_key(new).await?;
            std::fs::rename(&pending, &path).with_context(|| {
                format!("replacing {} with {}", path.display(), pending.display())
            })?;
            println!(
                "{count} credentials re-encrypted under a new key in {}",
                path.display()
            );
        }
        _ => anyhow::bail!(
            "give the new secret with --new-secret or CDN_INVALIDATOR_NEW_SECRET (at least 32 bytes)"
        ),
    }
    Ok(())
}
