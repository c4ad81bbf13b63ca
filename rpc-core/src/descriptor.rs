//! Static descriptions of a service and its methods, emitted by `#[service]`.
//!
//! A descriptor is what both ends compare during the hello exchange: the service name, and for
//! every method its name, its wire id and its signature as written in the trait. Method ids are
//! derived from method names (FNV-1a), never from positions, so reordering the methods of a trait
//! keeps old clients working.

/// One method of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// The method's name as written in the trait (`add`).
    pub name: &'static str,
    /// The id carried in request frames: [`method_id`] of the name.
    pub id: u32,
    /// Argument and return types as written in the trait, e.g. `(i64, i64) -> i64`.
    /// Two ends agree on a method when names and signatures are equal.
    pub signature: &'static str,
}

/// A whole service: its name and its methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// The name a client asks for in its hello (the trait's name unless overridden).
    pub name: &'static str,
    /// Every method of the service.
    pub methods: &'static [MethodDescriptor],
}

impl ServiceDescriptor {
    /// The method with this wire id, if the service has one.
    pub fn method(&self, id: u32) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.id == id)
    }

    /// The method with this name, if the service has one.
    pub fn method_by_name(&self, name: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// The wire id of a method: 32-bit FNV-1a of its name.
///
/// `const` so the macro and hand-written code compute the same value; the macro rejects a trait
/// whose method names collide.
pub const fn method_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_id_is_fnv1a() {
        // Reference values of 32-bit FNV-1a.
        assert_eq!(method_id(""), 0x811c_9dc5);
        assert_eq!(method_id("a"), 0xe40c_292c);
        assert_eq!(method_id("foobar"), 0xbf9c_f968);
        assert_ne!(method_id("add"), method_id("div"));
    }

    #[test]
    fn lookup_by_id_and_name() {
        static METHODS: [MethodDescriptor; 2] = [
            MethodDescriptor { name: "add", id: method_id("add"), signature: "(i64, i64) -> i64" },
            MethodDescriptor { name: "neg", id: method_id("neg"), signature: "(i64) -> i64" },
        ];
        let svc = ServiceDescriptor { name: "Calc", methods: &METHODS };
        assert_eq!(svc.method(method_id("neg")).unwrap().name, "neg");
        assert_eq!(svc.method_by_name("add").unwrap().id, method_id("add"));
        assert!(svc.method(1).is_none());
    }
}
