//! smoltcp driven by one task, and the TCP streams it hands out.
