//! The data source the server functions read from: shoal-server implements it
//! with the functions its REST handlers use, and provides it as context.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::model::{MachineCard, Overview, UnitRow};

/// A data source answer: the value, or what went wrong in words.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where the dashboard's data comes from on the server.
pub trait Backend: Send + Sync + 'static {
    /// Members, leader, indexes and fleet counts.
    fn overview(&self) -> Answer<'_, Overview>;
    /// Every machine with a live lease and the instances placed on it.
    fn machines(&self) -> Answer<'_, Vec<MachineCard>>;
    /// Every unit with its instances.
    fn units(&self) -> Answer<'_, Vec<UnitRow>>;
}

/// The data source as the server provides it to the views (`provide_context`).
pub type SharedBackend = Arc<dyn Backend>;
