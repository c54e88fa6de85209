use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serving::config::{Cli, Command, Config, ServeArgs};
use serving::progress::{LogProgress, TerminalProgress};
use serving::runtime::Progress;
use serving::{api, executors, foreign, reports, server, telemetry, Tidemark};

/// mimalloc: glibc malloc and free were the largest single cost on the HTTP threads, and
/// with mimalloc the order path sustains about 10% more (BENCHMARKS.md). Its resident
/// set per order held is higher than glibc's; the figures are there too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    serving::allocator::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Sql(args) => serving::shell::run(args),
        Command::Demo(args) => serving::demo::run(args),
        Command::Admin(command) => serving::admin::run(command),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tidemark: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => match serving::tls::acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(error) => {
                eprintln!("tidemark: invalid TLS settings: {error}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let traces = match config.traces_url() {
        Ok(url) => url.map(|url| telemetry::Tracing {
            url,
            sample_ratio: config.trace_sample_ratio,
        }),
        Err(error) => {
            eprintln!("tidemark: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    // Flushes the last spans once the server has stopped.
    let _traces = match telemetry::init(config.log_format, traces) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("tidemark: could not set up logging and traces: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "tidemark stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(), Box<dyn std::error::Error>> {
    let json_logs = telemetry::is_json(config.log_format);
    let listen = config.listen;
    let app = Tidemark::open(config)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let (stop_pg, pg_stopped) = tokio::sync::oneshot::channel::<()>();
    let pg_listen = match app.config.pg_listen()? {
        Some(address) => {
            let pg = tokio::net::TcpListener::bind(address).await?;
            let bound = pg.local_addr()?.to_string();
            let ready = {
                let app = app.clone();
                Arc::new(move || app.is_ready())
            };
            let login: sql::pg::Login = app.auth.enabled().then(|| {
                let app = app.clone();
                Arc::new(move |_user: &str, password: &str| app.auth.sql_login(&app, password))
                    as Arc<dyn Fn(&str, &str) -> Result<(), String> + Send + Sync>
            });
            tokio::spawn(sql::pg::serve(
                pg,
                app.sql.clone(),
                app.views.clone(),
                ready,
                login,
                async {
                    let _ = pg_stopped.await;
                },
            ));
            bound
        }
        None => "off".into(),
    };
    let metrics_listen = match app.config.metrics_listen()? {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|error| format!("metrics_listen {address}: {error}"))?;
            let bound = listener.local_addr()?.to_string();
            let router = serving::observability::router(app.clone());
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "the metrics listener stopped");
                }
            });
            bound
        }
        None => "off".into(),
    };
    if app.config.auth.enabled && app.config.auth.bootstrap_admin_key.is_none() {
        tracing::warn!("no TIDEMARK_BOOTSTRAP_ADMIN_KEY: only API keys already issued can administer this instance (`tidemark admin create-key` issues one while the server is stopped)");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %listener.local_addr()?, scheme, %pg_listen, %metrics_listen, workers = app.config.workers, data_dir = %app.config.data_dir.display(), "tidemark is listening");
    let recovering = app.clone();
    tokio::spawn(async move {
        let recovered = tokio::task::spawn_blocking({
            let app = recovering.clone();
            move || {
                let mut progress: Box<dyn Progress> = if json_logs {
                    Box::new(LogProgress::new())
                } else {
                    Box::new(TerminalProgress::new())
                };
                app.recover(progress.as_mut())
            }
        })
        .await;
        match recovered {
            Ok(Ok(())) => {
                // Every server sharing the log accepts the tokens this one signs.
                if let Err(error) =
                    serving::auth::Authenticator::publish_signing_keys(&recovering).await
                {
                    tracing::error!(error = %error.detail, "could not publish the token signing keys; stopping");
                    std::process::exit(1);
                }
                tracing::info!("ready");
                // A follower's leader calls the providers and reads foreign events.
                if recovering.config.kafka.follow {
                    return;
                }
                executors::spawn(recovering.clone());
                reports::spawn(recovering.clone());
                let config = &recovering.config;
                if let Ok(Some(cluster)) = config.foreign_cluster() {
                    if !config.kafka.foreign_topics.is_empty() {
                        let topics = config.kafka.foreign_topics.clone();
                        let stop = recovering.stopping();
                        let app = recovering.clone();
                        if let Err(error) = foreign::spawn(app, &cluster, &topics, stop) {
                            tracing::error!(%error, "could not start reading foreign events; stopping");
                            std::process::exit(1);
                        }
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "start-up failed; stopping");
                std::process::exit(1);
            }
            Err(error) => {
                tracing::error!(%error, "start-up panicked; stopping");
                std::process::exit(1);
            }
        }
    });
    let closing = Arc::clone(&app);
    server::serve(
        listener,
        api::app(Arc::clone(&app)),
        &app.config.http,
        tls,
        async move {
            shutdown_signal().await;
            closing.close_streams();
        },
    )
    .await?;
    tracing::info!("shutting down");
    drop(stop_pg);
    app.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
