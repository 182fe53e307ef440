//! Fleets of simulated devices for tests and the demo: genuine dies from
//! several IC vendors mixed with the silicon a factory must refuse — clones,
//! impostors and counterfeits (invariant 7, 2.4.14.17/18) — and genuine dies
//! that fail the order's policy (wrong firmware, readout left unlocked,
//! 2.4.14.16).
//!
//! Every device comes "as programmed" by the line: firmware measured, readout
//! lock applied. Given a seed, a fleet is the same every time (keys,
//! certificates, identity keys and the order of devices).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use trustline_proto::signer::{Signer, SoftwareSigner};

use super::die::{DieParts, SimulatedRot};
use super::keys::{new_key, RcgenKey};
use super::vendor::{cert_err, die_params, IcVendor, VendorShape};
use crate::Error;

/// What a fleet device really is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Authentic silicon, correctly programmed.
    Genuine,
    /// A copy of device `of`'s attestation key and chain: same `rot_id`,
    /// valid signatures. Caught as a duplicate (invariant 2).
    KeyClone {
        /// Index in the fleet of the device copied.
        of: usize,
    },
    /// Device `of`'s certificate chain on a different key: same `rot_id`,
    /// but its signatures fail under the certificate.
    Impostor {
        /// Index in the fleet of the device imitated.
        of: usize,
    },
    /// An attestation certificate signed by its own key, imitating a vendor.
    SelfSigned,
    /// A die from a CA that is not a configured vendor root, though it uses
    /// a configured vendor's name.
    UnknownVendor,
    /// Authentic silicon running firmware the order does not allow.
    WrongFirmware,
    /// Authentic silicon whose readout lock did not take.
    ReadoutUnlocked,
}

/// How the factory line should treat a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expected {
    /// Claimed, personalised and certified.
    Provisioned,
    /// Refused as not authentic silicon (`CounterfeitRejected`).
    CounterfeitRejected,
    /// Refused as a second device with an identity already in use.
    DuplicateRejected,
    /// Authentic but refused by the order's policy (firmware, readout lock).
    PolicyRejected,
}

impl DeviceKind {
    /// How the line should treat this kind of device. A key clone is a
    /// duplicate once its original is in the ledger (whichever comes first
    /// is provisioned).
    pub fn expected(self) -> Expected {
        match self {
            DeviceKind::Genuine => Expected::Provisioned,
            DeviceKind::KeyClone { .. } => Expected::DuplicateRejected,
            DeviceKind::Impostor { .. } | DeviceKind::SelfSigned | DeviceKind::UnknownVendor => {
                Expected::CounterfeitRejected
            }
            DeviceKind::WrongFirmware | DeviceKind::ReadoutUnlocked => Expected::PolicyRejected,
        }
    }

    /// A short lowercase name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Genuine => "genuine",
            DeviceKind::KeyClone { .. } => "key clone",
            DeviceKind::Impostor { .. } => "impostor",
            DeviceKind::SelfSigned => "self-signed counterfeit",
            DeviceKind::UnknownVendor => "unknown-vendor counterfeit",
            DeviceKind::WrongFirmware => "wrong firmware",
            DeviceKind::ReadoutUnlocked => "readout unlocked",
        }
    }
}

/// A device of a fleet and what it really is.
pub struct FleetDevice {
    /// What the device is (the line must find out by itself).
    pub kind: DeviceKind,
    /// The device.
    pub rot: SimulatedRot,
}

/// A fleet: IC vendors and the devices made (or faked) in their name.
pub struct Fleet {
    vendors: Vec<IcVendor>,
    firmware_sha256: [u8; 32],
    devices: Vec<FleetDevice>,
    rng: StdRng,
}

/// How many devices of each kind a fleet holds.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    genuine: usize,
    key_clones: usize,
    impostors: usize,
    self_signed: usize,
    unknown_vendor: usize,
    wrong_firmware: usize,
    readout_unlocked: usize,
}

/// Builds a [`Fleet`].
#[derive(Clone, Debug)]
pub struct FleetBuilder {
    seed: Option<u64>,
    vendors: Vec<(String, VendorShape)>,
    firmware_sha256: [u8; 32],
    counts: Counts,
}

/// The firmware digest fleets are programmed with unless told otherwise.
pub fn default_firmware_sha256() -> [u8; 32] {
    Sha256::digest(b"trustline simulated firmware 1.0").into()
}

impl Default for FleetBuilder {
    fn default() -> Self {
        Self {
            seed: None,
            vendors: Vec::new(),
            firmware_sha256: default_firmware_sha256(),
            counts: Counts::default(),
        }
    }
}

impl FleetBuilder {
    /// Derives every key, certificate and device from `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Adds an IC vendor. Without any, the fleet has two: "Acme Silicon"
    /// (with an intermediate) and "Borealis Semiconductor" (root only).
    pub fn vendor(mut self, name: &str, shape: VendorShape) -> Self {
        self.vendors.push((name.to_owned(), shape));
        self
    }

    /// The firmware digest the line programs (the order's allowed one).
    pub fn firmware_sha256(mut self, digest: [u8; 32]) -> Self {
        self.firmware_sha256 = digest;
        self
    }

    /// Genuine devices, spread over the vendors in turn.
    pub fn genuine(mut self, n: usize) -> Self {
        self.counts.genuine = n;
        self
    }

    /// Key clones of genuine devices (needs at least one genuine device).
    pub fn key_clones(mut self, n: usize) -> Self {
        self.counts.key_clones = n;
        self
    }

    /// Impostors of genuine devices (needs at least one genuine device).
    pub fn impostors(mut self, n: usize) -> Self {
        self.counts.impostors = n;
        self
    }

    /// Self-signed counterfeits.
    pub fn self_signed(mut self, n: usize) -> Self {
        self.counts.self_signed = n;
        self
    }

    /// Counterfeits from an unconfigured CA using a vendor's name.
    pub fn unknown_vendor(mut self, n: usize) -> Self {
        self.counts.unknown_vendor = n;
        self
    }

    /// Genuine silicon with firmware the order does not allow.
    pub fn wrong_firmware(mut self, n: usize) -> Self {
        self.counts.wrong_firmware = n;
        self
    }

    /// Genuine silicon whose readout lock does not take.
    pub fn readout_unlocked(mut self, n: usize) -> Self {
        self.counts.readout_unlocked = n;
        self
    }

    /// Makes the fleet. Devices come in this order: genuine, wrong firmware,
    /// readout unlocked, key clones, impostors, self-signed, unknown vendor.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when clones or impostors are asked for
    /// without genuine devices to copy, or for duplicate vendor names;
    /// [`Error::Certificate`] or [`Error::Proto`] if making a die fails.
    pub fn build(self) -> Result<Fleet, Error> {
        let c = self.counts;
        if c.genuine == 0 && (c.key_clones > 0 || c.impostors > 0) {
            return Err(Error::InvalidInput(
                "clones and impostors need genuine devices to copy".to_owned(),
            ));
        }
        let mut rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let specs = if self.vendors.is_empty() {
            vec![
                ("Acme Silicon".to_owned(), VendorShape::WithIntermediate),
                ("Borealis Semiconductor".to_owned(), VendorShape::RootOnly),
            ]
        } else {
            self.vendors
        };
        let mut vendors = Vec::with_capacity(specs.len());
        for (i, (name, shape)) in specs.iter().enumerate() {
            if specs[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::InvalidInput(format!(
                    "vendor {name:?} is listed twice"
                )));
            }
            vendors.push(IcVendor::from_rng(name, *shape, child_rng(&mut rng))?);
        }
        let mut fleet = Fleet {
            vendors,
            firmware_sha256: self.firmware_sha256,
            devices: Vec::new(),
            rng,
        };
        fleet.build_devices(c)?;
        Ok(fleet)
    }
}

impl Fleet {
    /// A builder with no devices and the default vendors.
    pub fn builder() -> FleetBuilder {
        FleetBuilder::default()
    }

    /// The configured (genuine) IC vendors.
    pub fn vendors(&self) -> &[IcVendor] {
        &self.vendors
    }

    /// A vendor by name, to manufacture more dies.
    pub fn vendor_mut(&mut self, name: &str) -> Option<&mut IcVendor> {
        self.vendors.iter_mut().find(|v| v.name() == name)
    }

    /// (vendor name, root certificate DER) of every configured vendor: the
    /// provisioner's trust configuration for silicon.
    pub fn vendor_roots(&self) -> Vec<(String, Vec<u8>)> {
        self.vendors
            .iter()
            .map(|v| (v.name().to_owned(), v.root_der().to_vec()))
            .collect()
    }

    /// The firmware digest genuine devices are programmed with.
    pub fn firmware_sha256(&self) -> [u8; 32] {
        self.firmware_sha256
    }

    /// The devices, in build order.
    pub fn devices(&self) -> &[FleetDevice] {
        &self.devices
    }

    /// The devices, mutably (to drive them).
    pub fn devices_mut(&mut self) -> &mut [FleetDevice] {
        &mut self.devices
    }

    /// Takes the devices out of the fleet.
    pub fn into_devices(self) -> Vec<FleetDevice> {
        self.devices
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the fleet has no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// A new key clone of device `of` (at any point of its life: cloning a
    /// certified device is the interesting case). Blank, as programmed.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an index out of range.
    pub fn key_clone(&mut self, of: usize) -> Result<SimulatedRot, Error> {
        let transport = p256::SecretKey::random(&mut self.rng);
        let rng = child_rng(&mut self.rng);
        let mut rot = self.device(of)?.copy_die(transport, rng)?;
        rot.set_firmware(self.firmware_sha256);
        rot.lock_readout();
        Ok(rot)
    }

    /// A new impostor of device `of`: its chain, another key.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an index out of range.
    pub fn impostor(&mut self, of: usize) -> Result<SimulatedRot, Error> {
        let key = new_key(&mut self.rng);
        let transport = p256::SecretKey::random(&mut self.rng);
        let rng = child_rng(&mut self.rng);
        let mut rot = self.device(of)?.impersonate(key, transport, rng)?;
        rot.set_firmware(self.firmware_sha256);
        rot.lock_readout();
        Ok(rot)
    }

    fn device(&self, index: usize) -> Result<&SimulatedRot, Error> {
        self.devices
            .get(index)
            .map(|d| &d.rot)
            .ok_or_else(|| Error::InvalidInput(format!("no device {index} in the fleet")))
    }

    fn build_devices(&mut self, c: Counts) -> Result<(), Error> {
        let vendor_count = self.vendors.len();
        let mut turn = 0usize;
        let mut next_vendor = || {
            turn += 1;
            (turn - 1) % vendor_count
        };
        for _ in 0..c.genuine {
            let rot = self.vendors[next_vendor()].manufacture()?;
            self.push_programmed(DeviceKind::Genuine, rot);
        }
        for i in 0..c.wrong_firmware {
            let mut rot = self.vendors[next_vendor()].manufacture()?;
            rot.lock_readout();
            rot.set_firmware(Sha256::digest(format!("tampered firmware {i}")).into());
            self.devices.push(FleetDevice {
                kind: DeviceKind::WrongFirmware,
                rot,
            });
        }
        for _ in 0..c.readout_unlocked {
            let mut rot = self.vendors[next_vendor()].manufacture()?;
            rot.break_readout_lock();
            self.push_programmed(DeviceKind::ReadoutUnlocked, rot);
        }
        for i in 0..c.key_clones {
            let of = i % c.genuine;
            let rot = self.key_clone(of)?;
            self.devices.push(FleetDevice {
                kind: DeviceKind::KeyClone { of },
                rot,
            });
        }
        for i in 0..c.impostors {
            let of = (c.genuine - 1) - (i % c.genuine);
            let rot = self.impostor(of)?;
            self.devices.push(FleetDevice {
                kind: DeviceKind::Impostor { of },
                rot,
            });
        }
        for i in 0..c.self_signed {
            let rot = self.self_signed_die(i)?;
            self.push_programmed(DeviceKind::SelfSigned, rot);
        }
        if c.unknown_vendor > 0 {
            // A rogue CA borrowing the first vendor's name and shape.
            let name = self.vendors[0].name().to_owned();
            let shape = if self.vendors[0].intermediate_der().is_some() {
                VendorShape::WithIntermediate
            } else {
                VendorShape::RootOnly
            };
            let mut rogue = IcVendor::from_rng(&name, shape, child_rng(&mut self.rng))?;
            for _ in 0..c.unknown_vendor {
                let rot = rogue.manufacture()?;
                self.push_programmed(DeviceKind::UnknownVendor, rot);
            }
        }
        Ok(())
    }

    fn push_programmed(&mut self, kind: DeviceKind, mut rot: SimulatedRot) {
        rot.set_firmware(self.firmware_sha256);
        rot.lock_readout();
        self.devices.push(FleetDevice { kind, rot });
    }

    /// A die whose attestation certificate is signed by its own key, with
    /// the first vendor's name in its subject.
    fn self_signed_die(&mut self, i: usize) -> Result<SimulatedRot, Error> {
        let vendor = self.vendors[0].name().to_owned();
        let chip_serial = format!("FAKE-{:010}", i + 1);
        let key = new_key(&mut self.rng);
        let params = die_params(&vendor, &chip_serial, &mut self.rng)?;
        let cert = params
            .self_signed(&RcgenKey::new(&key))
            .map_err(cert_err)?
            .der()
            .to_vec();
        let attestation = SoftwareSigner::from_key(key);
        let certified_spki = attestation.public_key_der().to_vec();
        SimulatedRot::assemble(DieParts {
            vendor,
            chip_serial,
            attestation,
            certified_spki,
            chain: vec![cert],
            transport_key: p256::SecretKey::random(&mut self.rng),
            rng: child_rng(&mut self.rng),
        })
    }
}

/// An independent generator derived from `rng` (so a seeded fleet stays
/// reproducible however its parts are used).
fn child_rng(rng: &mut StdRng) -> StdRng {
    StdRng::seed_from_u64(rng.gen())
}
