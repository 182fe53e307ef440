//! A batch's transaction, driven by hand on a pooled connection.
//!
//! `tokio_postgres::Transaction::commit` takes the transaction by value, so
//! its `COMMIT` cannot go out in one pipeline with the statements still
//! borrowing it. A batch wants exactly that: its head-row compare-and-swap
//! and its `COMMIT` sent together, the server judging the first and the
//! second rolling back if it failed (`batch::write`). [`Tx`] sends `BEGIN`,
//! `COMMIT` and `ROLLBACK` itself and derefs to the connection for the
//! statements in between.
//!
//! A [`Tx`] dropped while its transaction may be open (a task cancelled, a
//! connection lost mid-commit) does not go back to the pool: the
//! connection is closed, so the server rolls back what it had, and no later
//! user of the pool finds a transaction it did not begin.

use std::ops::Deref;

use deadpool_postgres::Object;

/// An open `READ COMMITTED` transaction on a connection of the pool.
pub(crate) struct Tx {
    /// `Some` until the transaction is dropped.
    client: Option<Object>,
    /// Whether the transaction may still be open on the server.
    open: bool,
}

impl Tx {
    /// Takes `client` for a transaction; [`Tx::begin`] starts it.
    pub(crate) fn new(client: Object) -> Tx {
        Tx {
            client: Some(client),
            open: true,
        }
    }

    /// Sends `BEGIN`: statements sent after it (pipelined, before its
    /// answer) run inside the transaction.
    pub(crate) async fn begin(&self) -> Result<(), tokio_postgres::Error> {
        self.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
    }

    /// Sends `COMMIT`. Behind a failed statement the server answers it by
    /// rolling back, without an error: the caller tells the two apart by
    /// the statements' own answers. Any answer ends the transaction; none
    /// (the connection lost) leaves its outcome unknown.
    pub(crate) async fn commit(&self) -> Result<(), tokio_postgres::Error> {
        self.batch_execute("COMMIT").await
    }

    /// Marks the transaction ended once its `COMMIT` was answered (either
    /// way): the connection may go back to the pool.
    pub(crate) fn ended(&mut self) {
        self.open = false;
    }

    /// Rolls back; the connection goes back to the pool only if the server
    /// answered.
    pub(crate) async fn rollback(mut self) {
        if self.batch_execute("ROLLBACK").await.is_ok() {
            self.open = false;
        }
    }
}

impl Deref for Tx {
    type Target = Object;

    fn deref(&self) -> &Object {
        // `client` is emptied only by `drop`.
        match &self.client {
            Some(c) => c,
            None => unreachable!("a transaction's connection is held until it is dropped"),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            if let Some(c) = self.client.take() {
                // Out of the pool and closed: the server rolls back.
                drop(Object::take(c));
            }
        }
    }
}
