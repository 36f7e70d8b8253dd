//! The migrations are embedded by `sqlx::migrate!`; a new migration file must rebuild
//! the binary even when no Rust source changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
