//! Streaming an offered payload into the passive slot, resumable: one HTTP
//! request from the recorded offset (a Range request), written in pieces,
//! each fsynced and then recorded, so a kill loses at most one piece.

use api::updates::Offer;
use api::Client;
use futures::TryStreamExt as _;
use tokio::io::AsyncReadExt as _;

use super::Fault;
use crate::lease::error_chain;
use crate::slots::{Slot, SlotDisk, SlotError};

/// Bytes written between two recorded offsets.
pub const PIECE: u64 = 1 << 20;

/// Downloads `offer` into `slot` from `offset` on, calling `checkpoint` with
/// every durably written offset; `Ok` when the whole payload is on the slot.
pub async fn download(
    client: &Client,
    disk: &SlotDisk,
    slot: Slot,
    offer: &Offer,
    offset: u64,
    mut checkpoint: impl FnMut(u64) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let size = offer.size;
    if offset >= size {
        return Ok(());
    }
    let response = client
        .download_payload(&offer.url, offset)
        .await
        .map_err(|e| {
            Fault::Retry(format!(
                "download of {}: {}",
                offer.version,
                error_chain(&e)
            ))
        })?;
    // A server that ignores the range sends the whole payload: start over.
    let mut at = if response.status().as_u16() == 206 {
        offset
    } else {
        0
    };
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    let mut reader = tokio_util::io::StreamReader::new(Box::pin(stream));
    while at < size {
        let end = size.min(at + PIECE);
        let piece = (&mut reader).take(end - at);
        match disk.write_payload(slot, end, at, piece).await {
            Ok(_) => at = end,
            Err(SlotError::PayloadRead { durable_until, .. }) => {
                checkpoint(durable_until)?;
                return Err(Fault::Retry(format!(
                    "download of {} broke off at byte {durable_until}",
                    offer.version
                )));
            }
            Err(SlotError::PayloadShort { got, .. }) => {
                checkpoint(got)?;
                return Err(Fault::Retry(format!(
                    "download of {} ended at byte {got} of {size}",
                    offer.version
                )));
            }
            Err(e @ (SlotError::TooLarge { .. } | SlotError::NotInvalidated { .. })) => {
                return Err(Fault::Fail(error_chain(&e)));
            }
            Err(e) => return Err(Fault::Retry(error_chain(&e))),
        }
        // A crash here leaves a synced piece on the slot that the state does not record.
        fail::fail_point!("update::piece_written", |_| super::crash(
            "update::piece_written"
        ));
        checkpoint(at)?;
    }
    let mut probe = [0u8; 1];
    match reader.read(&mut probe).await {
        Ok(0) => Ok(()),
        Ok(_) => Err(Fault::Fail(format!(
            "the payload of {} is longer than the announced {size} bytes",
            offer.version
        ))),
        Err(e) => Err(Fault::Retry(format!("download of {}: {e}", offer.version))),
    }
}
