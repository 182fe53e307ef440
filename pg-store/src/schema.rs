//! The versioned schema: SQL migrations in `pg-store/migrations/`
//! (`V<n>__<name>.sql`), embedded at build time and applied on start by
//! refinery, which records each applied version with its checksum in
//! [`HISTORY_TABLE`].
//!
//! A database whose history names a version newer than the newest one
//! embedded here was migrated by a newer build: it is refused with
//! [`Error::SchemaTooNew`] before anything is written. An applied
//! migration whose text changed since is refused too (refinery's
//! divergence check). Several replicas starting at once may race to apply
//! the same migration; the loser's transaction fails and it tries again,
//! then finds the version applied.

use std::time::Duration;

use crate::error::{Error, Result};

mod embedded {
    //! The migrations embedded from `pg-store/migrations/`.
    #![allow(missing_docs, unreachable_pub)]
    refinery::embed_migrations!("migrations");
}
use embedded::migrations;

/// The table refinery keeps the applied versions in.
pub const HISTORY_TABLE: &str = "trustline_schema_history";

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The newest version applied to the database, if any.
///
/// # Errors
/// [`Error::Database`].
pub async fn applied_version(client: &tokio_postgres::Client) -> Result<Option<i64>> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{HISTORY_TABLE}")],
        )
        .await
        .map_err(|e| db("reading the schema history", e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one(
            &format!("SELECT max(version)::int8 FROM {HISTORY_TABLE}"),
            &[],
        )
        .await
        .map_err(|e| db("reading the schema history", e))?;
    Ok(row.get::<_, Option<i64>>(0))
}

/// Refuses a schema newer than this build's, then applies the missing
/// migrations.
///
/// # Errors
/// [`Error::SchemaTooNew`]; [`Error::Migration`]; [`Error::Database`].
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    let supported = latest_version();
    let mut last_err = String::new();
    for attempt in 0..4u32 {
        if let Some(found) = applied_version(client).await? {
            if found > supported {
                return Err(Error::SchemaTooNew { found, supported });
            }
            if found == supported {
                return Ok(());
            }
        }
        let mut runner = migrations::runner()
            .set_abort_divergent(true)
            .set_abort_missing(true);
        runner.set_migration_table_name(HISTORY_TABLE);
        let run = runner.run_async(client).await;
        match run {
            Ok(report) => {
                for m in report.applied_migrations() {
                    tracing::info!(version = m.version(), name = m.name(), "schema migrated");
                }
                return Ok(());
            }
            Err(e) => {
                // Another replica may have applied it meanwhile: look again.
                last_err = e.to_string();
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    Err(Error::Migration(last_err))
}

fn db(context: &str, source: tokio_postgres::Error) -> Error {
    Error::Database {
        context: context.into(),
        source,
    }
}
