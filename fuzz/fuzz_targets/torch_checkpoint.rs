#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zamba2c_fuzz::fuzz_torch_checkpoint(data);
});
