//! Passes the nginx configuration that nginx-sys detected (OS, features, version)
//! to the module as cfg values, as ngx-rust documents for out-of-tree modules.
//!
//! The module is linked `-z nodelete`: nginx `dlclose`s its modules when a worker exits (it
//! destroys the cycle's pool), which would unmap the library while the process-lifetime data
//! of its dependencies (woothee's lazily built regexes and tables) still points into it; valgrind
//! then reports that data as "definitely lost" at every worker exit. With `nodelete` the library
//! stays mapped until the process ends, as it does anyway while nginx runs (a reload loads the
//! new configuration's module before the old cycle lets go of it).
fn main() {
    println!("cargo::rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        std::env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_OS_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_os, values({}))",
        std::env::var("DEP_NGINX_OS_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_OS");
    if let Ok(os) = std::env::var("DEP_NGINX_OS") {
        println!("cargo::rustc-cfg=ngx_os=\"{os}\"");
    }
}
