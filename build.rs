//! The link flags that let the binary, its tests and benches find libtorch without
//! `LD_LIBRARY_PATH`: the inference crate's build script found libtorch and hands its
//! directory over (`links = "pulmo-libtorch"`); link arguments apply only to the package
//! whose build script prints them, so this one prints them again for this package.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_PULMO_LIBTORCH_LIB_DIR") else {
        println!("cargo:warning=pulmo-inference did not report its libtorch directory");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::env::var("DEP_PULMO_LIBTORCH_CUDA").as_deref() == Ok("1") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
