//! Test support, for dev-dependencies only: a fresh migrated database per test (`TestDb`), and
//! Google's emulators (the Pub/Sub emulator, fake-gcs-server), started on first use and shared
//! by every test binary on the machine.

pub mod counting;
pub mod emulator;
mod testdb;

pub use testdb::TestDb;
