//! The TUN device and its address: all OS-specific and unsafe code lives here.
