//! Custody events after certification (2.4.14.12, 2.4.14.14): `SHIPPED`,
//! `RECEIVED` and `SCRAPPED`, keyed by the RoT-backed `rot_id`.
//!
//! Rules: the device must be certified (or, for scrapping, at least
//! claimed — a device that failed on the line is scrapped too); a scrapped
//! device takes no further step (`scrapped` unique key, so two scrappings
//! cannot both be recorded); a station ships or scraps only devices of its
//! own site — the site of the order the device was certified (or claimed)
//! under, checked by the factory's one site check — while any station may
//! record receiving a device (the receiving site, the caller's own, is
//! recorded as the entry's site). The order of shipments and
//! receipts is recorded, not enforced: a device may be shipped on through
//! several hands. Factory custody ends when the device's field life begins:
//! once any field event is recorded for it (a transfer, an onboarding —
//! the ownership service's `device-field` → `rot_id/0` key, see
//! [`backends::keys`]), every custody step is refused with
//! [`Error::LeftFactory`] (`FAILED_PRECONDITION`), so no station can scrap
//! or ship a device that already belongs to a customer (issue 12 item 3).

use backends::{append_request, keys, AppendRefusal};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use crate::error::{Error, Result};
use crate::order_book::check_site;
use crate::{draft, Actor, Factory};

/// Longest custody note accepted, in bytes.
const MAX_NOTE_LEN: usize = 1024;

/// A custody event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustodyKind {
    /// Left the site.
    Shipped,
    /// Arrived at a site.
    Received,
    /// Destroyed (2.4.14.14): final.
    Scrapped,
}

impl CustodyKind {
    /// From the wire's event kind.
    ///
    /// # Errors
    /// [`Error::Invalid`] for any other kind.
    pub fn from_event(kind: i32) -> Result<Self> {
        match EventKind::try_from(kind) {
            Ok(EventKind::Shipped) => Ok(Self::Shipped),
            Ok(EventKind::Received) => Ok(Self::Received),
            Ok(EventKind::Scrapped) => Ok(Self::Scrapped),
            _ => Err(Error::Invalid(
                "custody events are SHIPPED, RECEIVED or SCRAPPED".into(),
            )),
        }
    }

    fn event(self) -> EventKind {
        match self {
            Self::Shipped => EventKind::Shipped,
            Self::Received => EventKind::Received,
            Self::Scrapped => EventKind::Scrapped,
        }
    }
}

impl Factory {
    /// Records a custody event for a device.
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::UnknownDevice`], [`Error::WrongSite`],
    /// [`Error::Scrapped`], [`Error::LeftFactory`], [`Error::Backend`].
    pub async fn record_custody(
        &self,
        actor: &Actor,
        rot_id: &str,
        kind: CustodyKind,
        note: &str,
    ) -> Result<u64> {
        if note.len() > MAX_NOTE_LEN {
            return Err(Error::Invalid(format!(
                "note is longer than {MAX_NOTE_LEN} bytes"
            )));
        }
        if !trustline_proto::identity::is_well_formed_rot_id(rot_id) {
            return Err(Error::Invalid(format!("{rot_id:?} is not a rot_id")));
        }
        let holder = match self.lookup(keys::ROT, rot_id.as_bytes()).await? {
            Some(seq) => Some(seq),
            None if kind == CustodyKind::Scrapped => {
                self.lookup(keys::CLAIM, rot_id.as_bytes()).await?
            }
            None => None,
        };
        let Some(holder) = holder else {
            return Err(Error::UnknownDevice(rot_id.to_owned()));
        };
        let device = self.entry(holder).await?;
        if kind != CustodyKind::Received {
            let known = self.order(&device.order_id).await?;
            check_site(actor, &known.order)?;
        }
        let first_field = first_field_event(rot_id);
        let (scrapped, in_the_field) = futures::try_join!(
            self.lookup(keys::SCRAPPED, rot_id.as_bytes()),
            self.lookup(keys::DEVICE_FIELD, first_field.as_bytes()),
        )?;
        if scrapped.is_some() {
            return Err(Error::Scrapped(rot_id.to_owned()));
        }
        if in_the_field.is_some() {
            return Err(Error::LeftFactory(rot_id.to_owned()));
        }
        let site = match (kind, actor.scope.own_site()) {
            (CustodyKind::Received, Some(site)) => site.to_owned(),
            _ => device.site.clone(),
        };
        let payload = v1::CustodyPayload {
            note: note.to_owned(),
        };
        let entry = draft(
            kind.event(),
            rot_id,
            &device.serial,
            &site,
            actor,
            &device.order_id,
            &payload,
        );
        let keys = if kind == CustodyKind::Scrapped {
            vec![keys::unique(keys::SCRAPPED, rot_id.as_bytes())]
        } else {
            vec![]
        };
        match self.ledger.append(append_request(entry, keys, None)).await {
            Ok(r) => Ok(r.seq),
            Err(AppendRefusal::Conflict { .. }) => Err(Error::Scrapped(rot_id.to_owned())),
            Err(AppendRefusal::Quota { .. }) => {
                Err(Error::Config("quota on a custody event".into()))
            }
            Err(AppendRefusal::Failed(s)) => Err(Error::ledger(s)),
        }
    }
}

/// The value of a device's first field event under `device-field` (the
/// ownership service's `rot_id/n`, with n = 0).
fn first_field_event(rot_id: &str) -> String {
    format!("{rot_id}/0")
}
