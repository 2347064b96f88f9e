import Testing

@testable import OrderCore

@Suite("JSON parser and writer", .timeLimit(.minutes(1)))
struct JSONTests {
    func parse(_ text: String) throws -> JSON { try JSON.parse(text) }
    func rejects(_ bytes: [UInt8]) -> Bool { (try? JSON.parse(bytes)) == nil }
    func rejects(_ text: String) -> Bool { rejects(Array(text.utf8)) }

    // MARK: Values and round trips

    @Test func scalars() throws {
        #expect(try parse("null") == .null)
        #expect(try parse("true") == .bool(true))
        #expect(try parse("false") == .bool(false))
        #expect(try parse("0") == .int(0))
        #expect(try parse("-17") == .int(-17))
        #expect(try parse(#""hi""#) == .string("hi"))
        #expect(try parse(" \t\r\n[ ] \n") == .array([]))
        #expect(try parse("{}") == .object([]))
    }

    @Test(arguments: [
        #"{"a":1,"b":[true,false,null],"c":{"d":"e"},"f":-2.5e10,"g":""}"#,
        #"[1,"two",[3],{"four":4},null]"#,
        #"{"z":1,"a":2,"m":3}"#,
        "\"café ☕ 😀\"",
        "[]", "{}", #""""#, "0", "-0.0", "1E+2",
    ])
    func compactDocumentsRoundTripByteForByte(_ text: String) throws {
        let value = try JSON.parse(text)
        #expect(value.text == text)
        #expect(try JSON.parse(value.bytes) == value)
    }

    @Test func writtenValuesParseBackEqual() throws {
        let value: JSON = .object([
            ("s", .string("quote \" backslash \\ slash / nl \n tab \t nul \u{0} bell \u{7} del \u{7F} é 😀")),
            ("n", .number("12.50")), ("i", .int(.min)), ("j", .int(.max)), ("b", true), ("z", nil),
            ("a", [1, "x", [[]], .object([])]),
        ])
        #expect(try JSON.parse(value.bytes) == value)
    }

    @Test func objectKeyOrderIsPreserved() throws {
        let value = try parse(#"{"zeta":1,"alpha":2,"mid":3}"#)
        guard case .object(let fields) = value else { Issue.record("not an object"); return }
        #expect(fields.map(\.0) == ["zeta", "alpha", "mid"])
        #expect(value.text == #"{"zeta":1,"alpha":2,"mid":3}"#)
        let written = JSON.object([("b", 1), ("a", 2)]).text
        #expect(written == #"{"b":1,"a":2}"#)
    }

    @Test func duplicateKeysLastWins() throws {
        let value = try parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(value["a"] == .int(3))
        #expect(value["b"] == .int(2))
        #expect(value["missing"] == nil)
        #expect(JSON.int(1)["a"] == nil)
    }

    @Test func typeNames() {
        #expect(JSON.null.typeName == "null")
        #expect(JSON.bool(true).typeName == "boolean")
        #expect(JSON.int(1).typeName == "number")
        #expect(JSON.number("1.5").typeName == "number")
        #expect(JSON.string("").typeName == "string")
        #expect(JSON.array([]).typeName == "array")
        #expect(JSON.object([]).typeName == "object")
    }

    @Test func equalityOfObjectsIsOrderSensitiveAndDistinguishesIntFromNumber() {
        #expect(JSON.object([("a", 1), ("b", 2)]) != JSON.object([("b", 2), ("a", 1)]))
        #expect(JSON.int(2) != JSON.number("2.0"))
        #expect(JSON.null != JSON.string("null"))
    }

    // MARK: Strings and escapes

    @Test func simpleEscapes() throws {
        #expect(try parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{8}\u{C}\n\r\t"))
        #expect(try parse(#""\u0041\u00e9\u20AC""#) == .string("Aé€"))
        #expect(try parse(#""\u0000""#) == .string("\u{0}"))
    }

    @Test func surrogatePairsCombine() throws {
        #expect(try parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(try parse(#""\uD834\uDD1E""#) == .string("𝄞"))
        #expect(try parse(#""a\uDBFF\uDFFFz""#) == .string("a\u{10FFFF}z"))
    }

    @Test(arguments: [
        #""\ud83d""#,  // lone high surrogate
        #""\ude00""#,  // lone low surrogate
        #""\ud83dx""#,  // high surrogate followed by text
        #""\ud83d\u0041""#,  // high surrogate followed by a non-surrogate escape
        #""\ud83d\ud83d""#,  // two high surrogates
        #""\ud83d\n""#,
    ])
    func unpairedSurrogatesAreRejected(_ text: String) {
        #expect(rejects(text))
    }

    @Test(arguments: [
        #""\x41""#, #""\U0041""#, #""\u00""#, #""\u00G0""#, #""\u""#, #""\"#, #""abc"#, #""\'""#, #""\0""#,
    ])
    func invalidEscapesAndUnterminatedStringsAreRejected(_ text: String) {
        #expect(rejects(text))
    }

    @Test(arguments: [
        [0x22, 0xC3, 0x28, 0x22],  // bad continuation byte
        [0x22, 0xFF, 0x22],  // never valid in UTF-8
        [0x22, 0xC0, 0xAF, 0x22],  // overlong "/"
        [0x22, 0xE0, 0x80, 0xAF, 0x22],  // overlong 3-byte
        [0x22, 0xED, 0xA0, 0x80, 0x22],  // UTF-8 encoded surrogate U+D800
        [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
        [0x22, 0x61, 0xE2, 0x82, 0x22],  // truncated sequence before the closing quote
        [0x7B, 0x22, 0x80, 0x22, 0x3A, 0x31, 0x7D],  // {"\x80":1} invalid UTF-8 in a key
    ] as [[UInt8]])
    func invalidUTF8InStringsIsRejected(_ bytes: [UInt8]) {
        #expect(rejects(bytes))
    }

    @Test func invalidUTF8OutsideStringsIsRejected() {
        #expect(rejects([0xFF]))
        #expect(rejects([0x5B, 0x31, 0x5D, 0xC3]))  // [1] then a stray byte
        #expect(rejects([0xEF, 0xBB, 0xBF, 0x7B, 0x7D]))  // byte order mark then {}
    }

    @Test func validMultiByteUTF8IsAccepted() throws {
        #expect(try JSON.parse([0x22, 0xC3, 0xA9, 0x22]) == .string("é"))
        #expect(try JSON.parse([0x22, 0xF0, 0x9F, 0x98, 0x80, 0x22]) == .string("😀"))
    }

    @Test(arguments: Array(UInt8(0)..<UInt8(0x20)))
    func rawControlCharactersInStringsAreRejected(_ byte: UInt8) {
        #expect(rejects([0x22, 0x61, byte, 0x62, 0x22]))
        // The same character escaped is fine.
        let escaped = Array(#""a\u00"#.utf8) + Array(String(byte, radix: 16).leftPadded(2).utf8) + Array(#"b""#.utf8)
        #expect((try? JSON.parse(escaped)) == .string("a\(Character(Unicode.Scalar(byte)))b"))
    }

    @Test func deleteCharacterIsNotAControlCharacterForJSON() throws {
        #expect(try JSON.parse([0x22, 0x7F, 0x22]) == .string("\u{7F}"))
    }

    // MARK: Writer escapes

    @Test func writerEscapesQuotesBackslashesAndEveryControlCharacter() throws {
        #expect(JSON.string("a\"b\\c").text == #""a\"b\\c""#)
        #expect(JSON.string("\n\r\t").text == #""\n\r\t""#)
        #expect(JSON.string("\u{0}\u{1}\u{8}\u{C}\u{1F}").text == #""\u0000\u0001\u0008\u000c\u001f""#)
        for b in UInt8(0)..<0x20 {
            let s = String(Character(Unicode.Scalar(b)))
            let bytes = JSON.string(s).bytes
            #expect(!bytes.dropFirst().dropLast().contains { $0 < 0x20 }, "raw control byte \(b) written")
            #expect(try JSON.parse(bytes) == .string(s))
        }
        #expect(JSON.object([("k\n", "v")]).text == #"{"k\n":"v"}"#)
    }

    @Test func writerLeavesSlashDeleteAndNonASCIIAlone() {
        #expect(JSON.string("a/b\u{7F}é😀").bytes == Array("\"a/b\u{7F}é😀\"".utf8))
    }

    // MARK: Numbers

    @Test func int64Bounds() throws {
        #expect(try parse("9223372036854775807") == .int(.max))
        #expect(try parse("-9223372036854775808") == .int(.min))
        #expect(JSON.int(.min).text == "-9223372036854775808")
        #expect(JSON.int(.max).text == "9223372036854775807")
    }

    @Test(arguments: [
        "9223372036854775808", "-9223372036854775809", "123456789012345678901234567890",
        "18446744073709551616",
    ])
    func integersBeyondInt64BecomeNumbersKeptAsWritten(_ text: String) throws {
        #expect(try parse(text) == .number(text))
        #expect(try parse("[\(text)]").text == "[\(text)]")
    }

    @Test(arguments: ["2.0", "0.5", "-0.0", "1e3", "1E3", "1e+3", "1e-3", "-1.25E-10", "0e0"])
    func fractionsAndExponentsAreNumbersKeptAsWritten(_ text: String) throws {
        #expect(try parse(text) == .number(text))
    }

    @Test(arguments: [
        "01", "-01", "00", "+1", "-", ".5", "1.", "1.e3", "1e", "1e+", "--1", "0x10", "NaN", "Infinity", "-Infinity",
        "1_000", "١",
    ])
    func malformedNumbersAreRejected(_ text: String) {
        #expect(rejects(text))
    }

    // MARK: Structure

    @Test(arguments: [
        "", " ", "{} x", "1 2", "{}}", "[1],", "[1]]", "nullx", "truefalse", #"{"a":1}{"#, "\"a\" \"b\"", "{} \u{0}",
    ])
    func trailingGarbageAndEmptyInputAreRejected(_ text: String) {
        #expect(rejects(text))
    }

    @Test(arguments: [
        "[1,]", "[,1]", "[1 2]", #"{"a":1,}"#, #"{"a" 1}"#, #"{a:1}"#, #"{'a':1}"#, #"{"a":}"#, #"{1:2}"#, "[", "{",
        #"{"a":1"#, "tru", "nul", "True", "NULL", "[1,,2]", "// c\n1", "/* c */1", "\u{A0}1", "\u{B}1", "\u{C}1",
    ])
    func malformedStructureIsRejected(_ text: String) {
        #expect(rejects(text))
    }

    @Test func nestingUpToMaxDepthIsAccepted() throws {
        let depth = JSON.maxDepth
        let arrays = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        #expect(try parse(arrays).text == arrays)
        let objects = String(repeating: #"{"a":"#, count: depth - 1) + "{}" + String(repeating: "}", count: depth - 1)
        #expect(try parse(objects).text == objects)
    }

    @Test func nestingBeyondMaxDepthIsRejected() {
        let depth = JSON.maxDepth + 1
        #expect(rejects(String(repeating: "[", count: depth) + String(repeating: "]", count: depth)))
        #expect(rejects(String(repeating: #"{"a":"#, count: depth - 1) + "{}" + String(repeating: "}", count: depth - 1)))
        #expect(rejects(String(repeating: #"[{"a":"#, count: depth / 2 + 1) + "1" + String(repeating: "}]", count: depth / 2 + 1)))
    }

    @Test func absurdNestingIsRejectedWithoutCrashing() {
        // Far deeper than any stack would survive if the parser recursed without bound.
        let n = 1_000_000
        #expect(rejects(String(repeating: "[", count: n) + String(repeating: "]", count: n)))
        #expect(rejects(String(repeating: #"{"a":"#, count: n)))
        #expect(rejects(String(repeating: "[", count: n)))
    }

    @Test func parseErrorsCarryAnOffset() {
        do throws(JSONParseError) {
            _ = try JSON.parse("[1, x]")
            Issue.record("expected an error")
        } catch {
            #expect(error.offset == 4)
            #expect(!error.message.isEmpty)
        }
    }

    @Test func literalsAndHelpers() {
        let v: JSON = ["a", 1, true, nil]
        #expect(v == .array([.string("a"), .int(1), .bool(true), .null]))
        #expect(JSON.optional(nil as String?) == .null)
        #expect(JSON.optional("x" as String?) == .string("x"))
        #expect(JSON.optional(nil as Int64?) == .null)
        #expect(JSON.optional(7 as Int64?) == .int(7))
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
