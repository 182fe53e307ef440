//! The crate's one error enum, for opening, migrating, moving and
//! verifying; the engine's own calls answer [`custody_ledger::Error`] as
//! every [`custody_ledger::LedgerEngine`] does.

/// Why a PostgreSQL operation outside the engine's calls failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string or a setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The server could not be reached or kept failing (after bounded
    /// retries).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The server refused a statement for a reason retrying cannot fix.
    #[error("database: {context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Applying the schema migrations failed.
    #[error("migrating the schema: {0}")]
    Migration(String),
    /// The database carries a schema newer than this build understands:
    /// it was migrated by a newer Trustline. Refusing keeps an older build
    /// from writing rows a newer schema would misread.
    #[error(
        "the database schema is at version {found}, newer than version {supported} that this \
         build knows: upgrade Trustline, or point it at another database"
    )]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this build has.
        supported: i64,
    },
    /// The database holds another ledger: a different checkpoint key or
    /// origin (key rotation is not supported, as for the file engine).
    #[error("the database holds another ledger: {0}")]
    OtherLedger(String),
    /// An error of the ledger itself (its data, its files, its checks).
    #[error(transparent)]
    Ledger(#[from] custody_ledger::Error),
    /// The throwaway cluster (tests, benchmarks, the demo) failed.
    #[error("postgresql cluster: {0}")]
    Cluster(String),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, on which file.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
