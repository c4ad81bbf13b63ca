use rpc::service;

#[service]
pub unsafe trait Raw {
    unsafe fn peek(&self, addr: u64) -> u8;
    const fn size(&self) -> u64;
    extern "C" fn poke(&self, addr: u64, value: u8);
}

fn main() {}
