/// A minimal protobuf wire-format reader: enough to walk OTLP exports field by field in tests.
public struct ProtobufReader {
    public enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case bytes([UInt8])
        case fixed32(UInt32)
    }

    /// The fields of one message, in wire order; nil when the bytes are not well-formed.
    public static func fields(_ bytes: [UInt8]) -> [(number: Int, value: Value)]? {
        var out: [(Int, Value)] = []
        var i = 0
        func varint() -> UInt64? {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while i < bytes.count, shift < 64 {
                let b = bytes[i]
                i += 1
                result |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return result }
                shift += 7
            }
            return nil
        }
        func fixed(_ n: Int) -> UInt64? {
            guard i + n <= bytes.count else { return nil }
            var v: UInt64 = 0
            for k in 0..<n { v |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
            i += n
            return v
        }
        while i < bytes.count {
            guard let tag = varint() else { return nil }
            let number = Int(tag >> 3)
            switch tag & 7 {
            case 0:
                guard let v = varint() else { return nil }
                out.append((number, .varint(v)))
            case 1:
                guard let v = fixed(8) else { return nil }
                out.append((number, .fixed64(v)))
            case 2:
                guard let n = varint(), n <= UInt64(bytes.count - i) else { return nil }
                out.append((number, .bytes(Array(bytes[i..<i + Int(n)]))))
                i += Int(n)
            case 5:
                guard let v = fixed(4) else { return nil }
                out.append((number, .fixed32(UInt32(truncatingIfNeeded: v))))
            default: return nil
            }
        }
        return out
    }

    /// The length-delimited fields numbered `number`.
    public static func messages(_ bytes: [UInt8], _ number: Int) -> [[UInt8]] {
        (fields(bytes) ?? []).compactMap { f in
            guard f.number == number, case .bytes(let b) = f.value else { return nil }
            return b
        }
    }

    public static func string(_ bytes: [UInt8], _ number: Int) -> String? {
        messages(bytes, number).last.map { String(decoding: $0, as: UTF8.self) }
    }

    public static func varint(_ bytes: [UInt8], _ number: Int) -> UInt64? {
        (fields(bytes) ?? []).compactMap { f -> UInt64? in
            guard f.number == number, case .varint(let v) = f.value else { return nil }
            return v
        }.last
    }
}
