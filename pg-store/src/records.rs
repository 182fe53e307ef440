//! A ledger held in PostgreSQL as records: verified, exported and
//! imported in the file engine's formats ([`custody_ledger::format`]).
//!
//! Key design decision: the checks are the offline verifier's own
//! ([`custody_ledger::verify::RecordVerifier`]), fed the entries and
//! checkpoints in the order they were written from one repeatable-read
//! snapshot, so a PostgreSQL ledger passes or fails exactly where the same
//! records in files would. On top of them come the checks of what only the
//! database holds: each row's leaf hash, every stored Merkle subtree
//! recomputed (a node altered, missing or added), the head row, and the
//! counts of the key and quota tables. An export written here is byte for
//! byte the export of the same records in files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use custody_ledger::checkpoint;
use custody_ledger::export::ExportSummary;
use custody_ledger::format::{
    self, CheckpointRecord, EntryRecord, Record, Trailer, UnverifiedRecord, EXPORT_MAGIC,
    HEADER_LEN, RECORD_HEADER_LEN,
};
use custody_ledger::merkle::{chain_head, leaf_hash, Frontier, Hash, GENESIS_HEAD};
use custody_ledger::verify::{self, Problem, RecordVerifier, Verified, Visitor};
use deadpool_postgres::{Object, Pool};
use prost::Message;
use tokio_postgres::IsolationLevel;
use trustline_proto::v1::LedgerEntry;

use crate::db;
use crate::error::{Error, Result};
use crate::ledger::batch::{self, Rows};
use crate::ledger::{frontier_bytes, frontier_positions, to_hash, MapNodes, LOWEST_STORED};
use crate::schema;

/// Entries read per query.
const CHUNK: i64 = 4096;

/// One record in written order, with the row's own leaf column.
enum Item {
    Entry {
        seq: u64,
        entry: Vec<u8>,
        leaf: Vec<u8>,
    },
    Checkpoint(CheckpointRecord),
}

/// Connects to an existing ledger database for reading.
async fn reader(url: &str) -> Result<(Pool, Object)> {
    let pool = db::pool(url, 2)?;
    let client = db::retry(db::RetryPolicy::default(), "connecting", || async {
        Ok(pool.get().await?)
    })
    .await
    .map_err(unavailable)?;
    match schema::applied_version(&client).await? {
        None => {
            return Err(Error::Config(format!(
                "{} holds no ledger (no schema history)",
                db::redact(url)
            )))
        }
        Some(found) if found > schema::latest_version() => {
            return Err(Error::SchemaTooNew {
                found,
                supported: schema::latest_version(),
            })
        }
        Some(_) => {}
    }
    Ok((pool, client))
}

fn fault_error(f: db::Fault) -> Error {
    match f {
        db::Fault::Db(source) => Error::Database {
            context: "reading merkle nodes".into(),
            source,
        },
        db::Fault::Pool(e) => Error::Unavailable(e.to_string()),
        db::Fault::Final(e) => Error::Ledger(e),
    }
}

fn unavailable(e: custody_ledger::Error) -> Error {
    match e {
        custody_ledger::Error::Unavailable(m) => Error::Unavailable(m),
        other => Error::Ledger(other),
    }
}

fn database(context: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |source| Error::Database {
        context: context.into(),
        source,
    }
}

/// The key and origin recorded in the database.
async fn meta<C: tokio_postgres::GenericClient>(c: &C) -> Result<(String, Vec<u8>)> {
    let row = c
        .query_opt(
            "SELECT origin, public_key_pem FROM ledger_meta WHERE id = 1",
            &[],
        )
        .await
        .map_err(database("reading the ledger key"))?
        .ok_or_else(|| Error::Config("the database holds no ledger key yet".into()))?;
    let pem: String = row.get(1);
    Ok((row.get(0), checkpoint::spki_from_pem(&pem)?))
}

/// The checkpoint key recorded in the ledger database at `url`
/// (SubjectPublicKeyInfo DER). An auditor should rather use a key obtained
/// independently.
///
/// # Errors
/// Database errors; [`Error::Config`] when the database holds no ledger.
pub async fn stored_key(url: &str) -> Result<Vec<u8>> {
    let (_pool, client) = reader(url).await?;
    Ok(meta(&**client).await?.1)
}

/// Reads the records of `[lo, lo + CHUNK)` and the checkpoints among them
/// (all remaining checkpoints when the entries end). Returns the items and
/// where the next chunk starts, or `None` at the end.
async fn chunk<C: tokio_postgres::GenericClient>(
    c: &C,
    lo: u64,
) -> Result<(Vec<Item>, Option<u64>)> {
    let rows = c
        .query(
            "SELECT seq, entry, leaf FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&(lo as i64), &CHUNK],
        )
        .await
        .map_err(database("reading entries"))?;
    let hi = match rows.last() {
        Some(r) if rows.len() as i64 == CHUNK => Some(r.get::<_, i64>(0) as u64 + 1),
        _ => None,
    };
    let cps = c
        .query(
            "SELECT size, root, note, position FROM checkpoints \
             WHERE position >= $1 AND position < $2 ORDER BY position, size",
            &[&(lo as i64), &(hi.map_or(i64::MAX, |h| h as i64))],
        )
        .await
        .map_err(database("reading checkpoints"))?;
    let mut cps = cps.into_iter().peekable();
    let mut items = Vec::with_capacity(rows.len() + 8);
    for r in rows {
        let seq = r.get::<_, i64>(0) as u64;
        while let Some(cp) = cps.next_if(|c| c.get::<_, i64>(3) as u64 <= seq) {
            items.push(checkpoint_item(&cp)?);
        }
        items.push(Item::Entry {
            seq,
            entry: r.get(1),
            leaf: r.get(2),
        });
    }
    for cp in cps {
        items.push(checkpoint_item(&cp)?);
    }
    Ok((items, hi))
}

fn checkpoint_item(r: &tokio_postgres::Row) -> Result<Item> {
    Ok(Item::Checkpoint(CheckpointRecord {
        size: r.get::<_, i64>(0) as u64,
        root: to_hash(r.get(1), "checkpoints.root")?,
        note: r.get(2),
    }))
}

/// Verifies the ledger in the database at `url` like `verify_dir` verifies
/// files, plus the database's derived data (see the module doc). The key is
/// `opts.key` or, failing that, the one recorded in the database.
///
/// # Errors
/// Only when the database cannot be read; problems in the data are in the
/// report.
pub async fn verify(url: &str, opts: &verify::Options, visit: Visitor<'_>) -> Result<Verified> {
    let (_pool, mut client) = reader(url).await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(database("starting a snapshot"))?;
    let (_, stored_spki) = meta(&*tx).await?;
    let spki = opts.key.clone().unwrap_or(stored_spki);
    let mut v = RecordVerifier::new(spki, opts, visit);
    if let Some(r) = tx
        .query_opt(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(database("reading checkpoints"))?
    {
        v.anchor("the latest checkpoint row", r.get(0));
    }
    let mut derived = Derived::default();
    let mut lo = 0u64;
    loop {
        let (items, hi) = chunk(&*tx, lo).await?;
        let mut wanted = BTreeMap::new();
        for item in items {
            match item {
                Item::Entry { seq, entry, leaf } => {
                    let location = format!("entries row seq {seq}");
                    // The verifier's checks first: they name what is wrong
                    // with the entry itself.
                    v.record(
                        &location,
                        Record::Entry(EntryRecord {
                            seq,
                            entry: entry.clone(),
                        }),
                    );
                    derived.entry(seq, &entry, &leaf, &mut wanted, &mut v, &location);
                }
                Item::Checkpoint(cp) => {
                    let location = format!("checkpoints row size {}", cp.size);
                    v.record(&location, Record::Checkpoint(cp));
                }
            }
            if v.failed() {
                return Ok(v.finish());
            }
        }
        if let Some(p) = derived.check_nodes(&*tx, &wanted).await? {
            v.problem(p);
            return Ok(v.finish());
        }
        match hi {
            Some(h) => lo = h,
            None => break,
        }
    }
    if let Some(p) = derived.finish(&*tx).await? {
        v.problem(p);
    }
    Ok(v.finish())
}

/// What the database derives from the entries, recomputed.
#[derive(Default)]
struct Derived {
    frontier: Frontier,
    known: MapNodes,
    head: Option<Hash>,
    nodes: u64,
    keys: u64,
    quotas: BTreeMap<String, i64>,
    last_time_ms: i64,
    /// The recomputation follows the entries only while they are whole.
    broken: bool,
}

fn problem(seq: Option<u64>, location: impl Into<String>, what: impl Into<String>) -> Problem {
    Problem {
        seq,
        location: location.into(),
        what: what.into(),
    }
}

impl Derived {
    fn entry(
        &mut self,
        seq: u64,
        entry: &[u8],
        leaf: &[u8],
        wanted: &mut BTreeMap<(u8, u64), Hash>,
        v: &mut RecordVerifier<'_>,
        location: &str,
    ) {
        if v.failed() || self.broken || seq != self.frontier.size() {
            self.broken = true;
            return;
        }
        let computed = leaf_hash(entry);
        if leaf != computed.as_slice() {
            v.problem(problem(
                Some(seq),
                location,
                "the row's leaf hash is not the hash of its entry",
            ));
            return;
        }
        self.head = Some(chain_head(&self.head.unwrap_or(GENESIS_HEAD), &computed));
        let known = &mut self.known;
        let nodes = &mut self.nodes;
        self.frontier.push(computed, &mut |(level, idx, hash)| {
            known.0.insert((level, idx), hash);
            if level >= LOWEST_STORED {
                wanted.insert((level, idx), hash);
                *nodes += 1;
            }
        });
        // Forget subtrees the frontier no longer needs.
        let keep: BTreeSet<_> = frontier_positions(self.frontier.size())
            .into_iter()
            .collect();
        self.known.0.retain(|p, _| keep.contains(p));
        if let Ok(e) = LedgerEntry::decode(entry) {
            self.keys += e.unique_keys.len() as u64;
            if let Some(q) = e.quota {
                *self.quotas.entry(q.counter).or_default() += 1;
            }
            self.last_time_ms = e.time_ms;
        }
    }

    /// Compares the stored subtrees a chunk completed with the recomputed.
    async fn check_nodes<C: tokio_postgres::GenericClient + Sync>(
        &self,
        c: &C,
        wanted: &BTreeMap<(u8, u64), Hash>,
    ) -> Result<Option<Problem>> {
        if wanted.is_empty() {
            return Ok(None);
        }
        let set: BTreeSet<_> = wanted.keys().copied().collect();
        let stored = crate::ledger::fetch_nodes(c, &set)
            .await
            .map_err(fault_error)?;
        for (&(level, idx), hash) in wanted {
            let location = format!("merkle_nodes row ({level}, {idx})");
            match stored.0.get(&(level, idx)) {
                None => {
                    return Ok(Some(problem(
                        None,
                        location,
                        "the stored subtree is missing",
                    )))
                }
                Some(h) if h != hash => {
                    return Ok(Some(problem(
                        None,
                        location,
                        "the stored subtree hash differs from the one recomputed from the entries",
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(None)
    }

    /// The head row and the table counts.
    async fn finish<C: tokio_postgres::GenericClient>(&self, c: &C) -> Result<Option<Problem>> {
        if self.broken {
            return Ok(None);
        }
        let size = self.frontier.size();
        let head = c
            .query_one(
                "SELECT size, head, frontier FROM ledger_head WHERE id = 1",
                &[],
            )
            .await
            .map_err(database("reading the head row"))?;
        let stored_size = head.get::<_, i64>(0) as u64;
        if stored_size != size {
            return Ok(Some(problem(
                Some(size.min(stored_size)),
                "ledger_head",
                format!(
                    "the head row counts {stored_size} entries, the entries table holds {size}: \
                     entries were removed or added"
                ),
            )));
        }
        let chain = self.head.unwrap_or(GENESIS_HEAD);
        if head.get::<_, &[u8]>(1) != chain.as_slice() {
            return Ok(Some(problem(None, "ledger_head", "the chain head differs")));
        }
        if head.get::<_, &[u8]>(2) != frontier_bytes(size, &self.known)?.as_slice() {
            return Ok(Some(problem(
                None,
                "ledger_head",
                "the Merkle frontier differs",
            )));
        }
        let counts = c
            .query_one(
                "SELECT (SELECT count(*) FROM merkle_nodes), (SELECT count(*) FROM unique_keys)",
                &[],
            )
            .await
            .map_err(database("counting rows"))?;
        let (nodes, keys) = (
            counts.get::<_, i64>(0) as u64,
            counts.get::<_, i64>(1) as u64,
        );
        if nodes != self.nodes {
            return Ok(Some(problem(
                None,
                "merkle_nodes",
                format!("{nodes} rows where the entries make {}", self.nodes),
            )));
        }
        if keys != self.keys {
            return Ok(Some(problem(
                None,
                "unique_keys",
                format!("{keys} rows where the entries declare {}", self.keys),
            )));
        }
        let quotas: BTreeMap<String, i64> = c
            .query("SELECT counter, used FROM quotas", &[])
            .await
            .map_err(database("reading quotas"))?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if quotas != self.quotas {
            return Ok(Some(problem(
                None,
                "quotas",
                "the quota counts differ from those the entries declare",
            )));
        }
        Ok(None)
    }
}

/// Writes an export of the ledger in the database at `url` to `out`
/// (through a temporary file, synced and renamed into place): the same
/// bytes `trustline ledger export` writes for the same records in files.
///
/// # Errors
/// [`custody_ledger::Error::NotFound`] when no checkpoint was published;
/// database and file errors.
pub async fn export(url: &str, out: &Path) -> Result<ExportSummary> {
    let (_pool, mut client) = reader(url).await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(database("starting a snapshot"))?;
    let (_, spki) = meta(&*tx).await?;
    let latest: String = tx
        .query_opt(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(database("reading checkpoints"))?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            custody_ledger::Error::NotFound(
                "the ledger has no checkpoint yet: nothing signed to export".into(),
            )
        })?;
    let origin = latest.lines().next().unwrap_or_default().to_string();
    checkpoint::open(&latest, &spki, Some(&origin))?;

    let tmp = out.with_extension("partial");
    let file =
        File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    let mut buf = format::encode_header(EXPORT_MAGIC, 0).to_vec();
    format::encode_key(&origin, &spki, &mut buf);
    let mut trailer = Trailer {
        entries: 0,
        checkpoints: 0,
        head: GENESIS_HEAD,
    };
    let mut bytes = 0u64;
    let mut lo = 0u64;
    loop {
        let (items, hi) = chunk(&*tx, lo).await?;
        for item in items {
            match item {
                Item::Entry { seq, entry, .. } => {
                    trailer.entries += 1;
                    trailer.head = chain_head(&trailer.head, &leaf_hash(&entry));
                    format::encode_entry(seq, &entry, &mut buf);
                }
                Item::Checkpoint(cp) => {
                    trailer.checkpoints += 1;
                    format::encode_checkpoint(cp.size, &cp.root, &cp.note, &mut buf);
                }
            }
        }
        w.write_all(&buf).map_err(io)?;
        bytes += buf.len() as u64;
        buf.clear();
        match hi {
            Some(h) => lo = h,
            None => break,
        }
    }
    format::encode_trailer(&trailer, &mut buf);
    w.write_all(&buf).map_err(io)?;
    bytes += buf.len() as u64;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, out)
        .map_err(|e| Error::io(format!("renaming to {}", out.display()), e))?;
    Ok(ExportSummary {
        entries: trailer.entries,
        checkpoints: trailer.checkpoints,
        head: trailer.head,
        bytes,
    })
}

/// What [`import_dir`] moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Entries moved.
    pub entries: u64,
    /// Checkpoint records moved.
    pub checkpoints: u64,
    /// The chain head after the last entry (the same in both).
    pub head: Hash,
    /// The root of the tree of every entry (the same in both).
    pub root: Hash,
}

/// Moves the file ledger in `dir` (a stopped site's `<data>/ledger`) into
/// the empty ledger database at `url`, then verifies the database and
/// compares it with the files: `trustline ledger migrate`.
///
/// The files are verified first and must pass (fail closed: every entry
/// covered by a signed checkpoint); their records go into the database in
/// one transaction, in written order, so the database holds the same
/// entries, checkpoints and positions, and its export equals the files'.
///
/// # Errors
/// [`Error::Ledger`] when the files do not verify; [`Error::OtherLedger`]
/// when the database already holds entries; [`Error::Migration`] when the
/// result differs; database and file errors.
pub async fn import_dir(dir: &Path, url: &str) -> Result<ImportSummary> {
    let storage = custody_ledger::storage::FileStorage::open(dir)
        .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    let source = custody_ledger::verify::verify_dir(&storage, &Default::default(), &mut |_| {})?;
    if let Some(p) = &source.report.problem {
        return Err(Error::Ledger(custody_ledger::Error::Corrupt {
            location: p.location.clone(),
            what: format!(
                "the file ledger does not verify, nothing was moved: {}",
                p.what
            ),
        }));
    }
    let staging = tempfile::Builder::new()
        .prefix("trustline-migrate")
        .tempdir()
        .map_err(|e| Error::io("creating a staging directory", e))?;
    let export_path = staging.path().join("ledger.export");
    custody_ledger::export::export(&storage, &export_path)?;

    let pool = db::pool(url, 2)?;
    let mut client = db::retry(db::RetryPolicy::default(), "connecting", || async {
        Ok(pool.get().await?)
    })
    .await
    .map_err(unavailable)?;
    schema::migrate(&mut client).await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(database("starting the import"))?;
    let head = tx
        .query_one("SELECT size FROM ledger_head WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(database("locking the head row"))?;
    let has_meta = tx
        .query_opt("SELECT 1 FROM ledger_meta WHERE id = 1", &[])
        .await
        .map_err(database("reading the ledger key"))?
        .is_some();
    if head.get::<_, i64>(0) != 0 || has_meta {
        return Err(Error::OtherLedger(
            "it is not empty: migrate only into a new database".into(),
        ));
    }
    // The export is read on a blocking thread; rows are written a chunk
    // at a time, so memory stays flat in the ledger's size.
    let (records, mut rx) = tokio::sync::mpsc::channel::<Result<Record>>(1024);
    let path = export_path.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let r = read_export(&path, &mut |rec| {
            records
                .blocking_send(Ok(rec))
                .map_err(|_| Error::Migration("the import stopped".into()))
        });
        if let Err(e) = r {
            let _ = records.blocking_send(Err(e));
        }
    });
    let mut imp = Importer::default();
    while let Some(rec) = rx.recv().await {
        let rec = rec?;
        if let Record::Key(k) = &rec {
            tx.execute(
                "INSERT INTO ledger_meta (id, origin, public_key_pem) VALUES (1, $1, $2)",
                &[&k.origin, &checkpoint::spki_to_pem(&k.spki)],
            )
            .await
            .map_err(database("recording the ledger key"))?;
        }
        imp.record(rec)?;
        if imp.rows.seqs.len() as i64 >= CHUNK {
            let rows = std::mem::take(&mut imp.rows);
            write_rows(&tx, &rows).await?;
        }
    }
    reading
        .await
        .map_err(|_| Error::Migration("reading the export failed".into()))?;
    write_rows(&tx, &imp.rows).await?;
    let entries = imp.entries;
    for (cp, position) in &imp.checkpoints {
        tx.execute(
            "INSERT INTO checkpoints (size, root, note, position) VALUES ($1, $2, $3, $4)",
            &[
                &(cp.size as i64),
                &cp.root.to_vec(),
                &cp.note,
                &(*position as i64),
            ],
        )
        .await
        .map_err(database("inserting checkpoints"))?;
    }
    let frontier = frontier_bytes(entries, &imp.known)?;
    tx.execute(
        "UPDATE ledger_head SET size = $1, head = $2, last_time_ms = $3, frontier = $4 WHERE id = 1",
        &[&(entries as i64), &imp.head.to_vec(), &imp.last_time_ms, &frontier],
    )
    .await
    .map_err(database("moving the head row"))?;
    tx.commit()
        .await
        .map_err(database("committing the import"))?;

    let moved = verify(url, &Default::default(), &mut |_| {}).await?;
    let (a, b) = (&source.report, &moved.report);
    if let Some(p) = &b.problem {
        return Err(Error::Migration(format!(
            "the moved ledger does not verify: {p}"
        )));
    }
    if a.entries != b.entries
        || a.head != b.head
        || a.root != b.root
        || a.checkpoints != b.checkpoints
    {
        return Err(Error::Migration(
            "the moved ledger differs from the files".into(),
        ));
    }
    Ok(ImportSummary {
        entries: b.entries,
        checkpoints: b.checkpoints,
        head: b.head,
        root: b.root,
    })
}

async fn write_rows(tx: &deadpool_postgres::Transaction<'_>, rows: &Rows) -> Result<()> {
    if rows.seqs.is_empty() {
        return Ok(());
    }
    let st = batch::Statements::prepare(tx)
        .await
        .map_err(database("preparing the inserts"))?;
    batch::insert_rows(tx, &st, rows, true)
        .await
        .map_err(database("inserting entries"))
}

/// Builds the rows of an import from export records.
#[derive(Default)]
struct Importer {
    key: Option<(String, Vec<u8>)>,
    entries: u64,
    head: Hash,
    last_time_ms: i64,
    frontier: Frontier,
    known: MapNodes,
    /// The chunk being built.
    rows: Rows,
    checkpoints: Vec<(CheckpointRecord, u64)>,
}

impl Importer {
    fn record(&mut self, rec: Record) -> Result<()> {
        match rec {
            Record::Key(k) => self.key = Some((k.origin, k.spki)),
            Record::Checkpoint(cp) => self.checkpoints.push((cp, self.entries)),
            Record::Trailer(_) => {}
            Record::Entry(e) => {
                let rows = &mut self.rows;
                let decoded = LedgerEntry::decode(e.entry.as_slice()).map_err(|err| {
                    Error::Migration(format!("entry {} does not decode: {err}", e.seq))
                })?;
                let leaf = leaf_hash(&e.entry);
                self.head = chain_head(&self.head, &leaf);
                self.last_time_ms = decoded.time_ms;
                let known = &mut self.known;
                self.frontier.push(leaf, &mut |(level, idx, hash)| {
                    known.0.insert((level, idx), hash);
                    if level >= LOWEST_STORED {
                        rows.node_levels.push(i16::from(level));
                        rows.node_idxs.push(idx as i64);
                        rows.node_hashes.push(hash.to_vec());
                    }
                });
                let keep: BTreeSet<_> = frontier_positions(self.frontier.size())
                    .into_iter()
                    .collect();
                self.known.0.retain(|p, _| keep.contains(p));
                for k in &decoded.unique_keys {
                    rows.key_ns.push(k.namespace.clone());
                    rows.key_values.push(k.value.clone());
                    rows.key_seqs.push(e.seq as i64);
                }
                if let Some(q) = &decoded.quota {
                    match rows.quota_counters.iter().position(|c| c == &q.counter) {
                        Some(i) => rows.quota_added[i] += 1,
                        None => {
                            rows.quota_counters.push(q.counter.clone());
                            rows.quota_added.push(1);
                        }
                    }
                }
                rows.seqs.push(e.seq as i64);
                rows.leaves.push(leaf.to_vec());
                rows.rots
                    .push((!decoded.rot_id.is_empty()).then_some(decoded.rot_id));
                rows.entries.push(e.entry);
                self.entries += 1;
            }
        }
        Ok(())
    }
}

/// Reads an export file record by record (the records' checksums are
/// checked; their meaning was checked by the verifier before).
fn read_export(path: &Path, f: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).map_err(io)?;
    format::parse_header(&header, EXPORT_MAGIC).map_err(Error::Migration)?;
    let mut buf = vec![0u8; RECORD_HEADER_LEN];
    loop {
        buf.resize(RECORD_HEADER_LEN, 0);
        match r.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > format::MAX_BODY_LEN {
            return Err(Error::Migration("an export record is too long".into()));
        }
        buf.resize(RECORD_HEADER_LEN + len, 0);
        r.read_exact(&mut buf[RECORD_HEADER_LEN..]).map_err(io)?;
        let rec = UnverifiedRecord::new(&buf)
            .check()
            .map_err(|e| Error::Migration(e.to_string()))?
            .parse()
            .map_err(Error::Migration)?;
        f(rec)?;
    }
}
