//! Field life: the user-data area, user resets and the one-way lifecycle
//! steps, each out-of-service step erasing the user data and signing a
//! `ResetProof` (2.4.16.4, 2.4.16.7, 2.4.14.24).

use sha2::{Digest, Sha256};
use trustline_proto::statement::sign;
use trustline_proto::v1;

use super::{check_challenge, SimulatedRot, ERASED_BYTE, USER_AREA_LEN};
use crate::rot::lifecycle::{Lifecycle, Step};
use crate::Error;

impl SimulatedRot {
    /// Writes `data` into the user-data area at `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the write does not fit the area;
    /// [`Error::IllegalTransition`] on a retired device.
    pub fn write_user_data(&mut self, offset: usize, data: &[u8]) -> Result<(), Error> {
        if self.lifecycle == Lifecycle::Retired {
            return Err(Error::IllegalTransition {
                from: self.lifecycle.name(),
                step: "write user data",
            });
        }
        let end = offset
            .checked_add(data.len())
            .filter(|end| *end <= USER_AREA_LEN)
            .ok_or_else(|| {
                Error::InvalidInput(format!("user-data write past {USER_AREA_LEN} bytes"))
            })?;
        self.user_area[offset..end].copy_from_slice(data);
        Ok(())
    }

    /// The whole user-data area.
    pub fn user_data(&self) -> &[u8] {
        &self.user_area
    }

    /// Resets completed so far (monotonic).
    pub fn reset_counter(&self) -> u64 {
        self.reset_counter
    }

    /// Erases the user-data area and signs a `ResetProof` with the identity
    /// key carrying the SHA-256 of the erased area, the bumped reset counter
    /// and the current state (2.4.16.7).
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn user_reset(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, None)
    }

    /// First onboarding: a personalised device enters service.
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] from any other state.
    pub fn enter_service(&mut self) -> Result<(), Error> {
        self.lifecycle = self.lifecycle.after(Step::EnterService)?;
        Ok(())
    }

    /// Takes the device out of service: erases the user data and signs the
    /// reset proof (state decommissioned) over `challenge` (2.4.16.4).
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] unless in service;
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn decommission(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, Some(Step::Decommission))
    }

    /// Returns a decommissioned device to service for a new owner, erasing
    /// the user data again and signing the proof (state in service).
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] unless decommissioned;
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn recommission(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, Some(Step::Recommission))
    }

    /// Retires the device for good, erasing the user data and signing the
    /// proof (state retired, 2.4.14.24). Nothing moves it afterwards.
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] when blank, claimed or already retired;
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn retire(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        self.reset_and_prove(challenge, Some(Step::Retire))
    }

    /// Checks everything first, then erases, steps and signs: a refusal
    /// changes nothing.
    fn reset_and_prove(
        &mut self,
        challenge: &[u8],
        step: Option<Step>,
    ) -> Result<v1::SignedStatement, Error> {
        check_challenge(challenge)?;
        let next = match step {
            Some(step) => self.lifecycle.after(step)?,
            None => self.lifecycle,
        };
        self.identity()?;
        self.user_area.fill(ERASED_BYTE);
        self.reset_counter += 1;
        self.lifecycle = next;
        let proof = v1::ResetProof {
            rot_id: self.rot_id.clone(),
            challenge: challenge.to_vec(),
            reset_counter: self.reset_counter,
            user_area_sha256: Sha256::digest(&self.user_area).to_vec(),
            state: next.to_proto() as i32,
        };
        Ok(sign(self.identity()?, &proof)?)
    }
}
