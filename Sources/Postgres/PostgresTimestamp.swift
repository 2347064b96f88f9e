import Foundation

/// Timestamp text conversions done by hand: exact to the microsecond, locale- and thread-safe,
/// and cheaper than (Date|ISO8601)Formatter.
enum PostgresTimestamp {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, rounded to the microsecond.
    static func format(_ date: Date) -> String {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        let (seconds, fraction) = floorDivMod(micros, 1_000_000)
        let (days, secondOfDay) = floorDivMod(seconds, 86_400)
        let (year, month, day) = civil(fromDays: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T"
            + "\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))"
            + ".\(pad(fraction, 6))Z"
    }

    /// Parses ISO output of timestamptz, timestamp (taken as UTC) and date:
    /// `YYYY-MM-DD[( |T)HH:MM:SS[.ffffff]][Z|±HH[:MM[:SS]]]`. Returns nil for anything else.
    static func parse(_ text: String) -> Date? {
        var s = Substring(text).utf8[...]
        func number(minDigits: Int, maxDigits: Int) -> Int64? {
            var value: Int64 = 0
            var count = 0
            while let c = s.first, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9"), count < maxDigits {
                value = value * 10 + Int64(c - UInt8(ascii: "0"))
                count += 1
                s = s.dropFirst()
            }
            return count >= minDigits ? value : nil
        }
        func take(_ c: Character) -> Bool {
            guard s.first == c.asciiValue else { return false }
            s = s.dropFirst()
            return true
        }
        guard let year = number(minDigits: 4, maxDigits: 6), take("-"),
            let month = number(minDigits: 2, maxDigits: 2), (1...12).contains(month), take("-"),
            let day = number(minDigits: 2, maxDigits: 2), (1...31).contains(day)
        else { return nil }
        var seconds = days(fromCivil: year, month, day) * 86_400
        var micros: Int64 = 0
        if take(" ") || take("T") {
            guard let hour = number(minDigits: 2, maxDigits: 2), hour <= 24, take(":"),
                let minute = number(minDigits: 2, maxDigits: 2), minute < 60, take(":"),
                let second = number(minDigits: 2, maxDigits: 2), second <= 60
            else { return nil }
            seconds += hour * 3600 + minute * 60 + second
            if take(".") {
                let start = s.count
                guard let fraction = number(minDigits: 1, maxDigits: 6) else { return nil }
                let digits = start - s.count
                micros = fraction
                for _ in digits..<6 { micros *= 10 }
                // Should the server ever print more digits, ignore them rather than fail.
                _ = number(minDigits: 0, maxDigits: .max)
            }
            if take("Z") {
            } else if let sign = s.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
                s = s.dropFirst()
                guard let hours = number(minDigits: 2, maxDigits: 2) else { return nil }
                var offset = hours * 3600
                if take(":") {
                    guard let minutes = number(minDigits: 2, maxDigits: 2) else { return nil }
                    offset += minutes * 60
                    if take(":") {
                        guard let secs = number(minDigits: 2, maxDigits: 2) else { return nil }
                        offset += secs
                    }
                }
                seconds -= sign == UInt8(ascii: "+") ? offset : -offset
            }
        }
        guard s.isEmpty else { return nil }
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        guard !overflow else { return Date(timeIntervalSince1970: Double(seconds) + Double(micros) / 1_000_000) }
        return Date(timeIntervalSince1970: Double(scaled + micros) / 1_000_000)
    }

    private static func floorDivMod(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
        let q = a / b
        let r = a % b
        return r < 0 ? (q - 1, r + b) : (q, r)
    }

    // Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian, day 0 = 1970-01-01).
    private static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
