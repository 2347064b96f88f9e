/// What the pipeline needs from the Product Service.
public protocol ProductCatalog: Sendable {
    /// Current details of these products; ids the service does not know are in `notFound`.
    func lookup(_ productIds: [Int64]) async throws(UpstreamFailure) -> ProductLookup
}

public struct ProductLookup: Sendable, Equatable {
    public var products: [Int64: Product]
    public var notFound: [Int64]
    /// Asked-for products whose details broke the contract, with why (counted as not found too).
    public var unusable: [Int64: String]
    public init(products: [Int64: Product], notFound: [Int64], unusable: [Int64: String] = [:]) {
        self.products = products
        self.notFound = notFound
        self.unusable = unusable
    }
}

/// What the pipeline needs from the Inventory Service.
public protocol InventoryChecker: Sendable {
    func check(_ lines: [(productId: Int64, quantity: Int)]) async throws(UpstreamFailure) -> [StockLine]
}

/// CONTRACT section 5 over Kafka: `get_product_details` → `product_details`.
public struct KafkaProductCatalog: ProductCatalog {
    let client: UpstreamClient
    let topics: Topics

    public init(client: UpstreamClient, topics: Topics) {
        self.client = client
        self.topics = topics
    }

    public func lookup(_ productIds: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        let (upstreamId, reply) = try await client.request(service: "product", topic: topics.productRequests, replyTopic: topics.productReplies) { id in
            .object([("request_id", .string(id)), ("product_ids", .array(productIds.map { .int($0) }))])
        }
        let lookup = try ProductLookup(reply: reply, asked: productIds)
        if !lookup.unusable.isEmpty {
            // Once per answer, with the id the Product Service's operators can find it by.
            let sample = lookup.unusable.sorted { $0.key < $1.key }.prefix(10).map { "\($0.key): \($0.value)" }
            client.logger.warning("product details broke the contract; those products count as not found", metadata: [
                "upstream_request_id": "\(upstreamId)", "products": "\(lookup.unusable.count)", "reasons": "\(sample.joined(separator: "; "))",
            ])
        }
        return lookup
    }
}

extension ProductLookup {
    /// Reads a `product_details` reply: the one place where product details enter the service.
    /// Only asked-for ids are read. An entry needs an integer `product_id`, a usable name
    /// (`Product.nameProblem`) and a price that is a `Money` (a string or JSON decimal with at
    /// most two decimals, or a JSON integer of whole units; 0…`Money.max`); two entries for one
    /// id must agree. Entries that break this make their product unusable (not found);
    /// ids the reply does not mention are not found.
    init(reply: JSON, asked: [Int64]) throws(UpstreamFailure) {
        guard case .array(let list)? = reply["products"] else {
            throw .badReply(service: "product", reason: "products is missing or not an array")
        }
        let wanted = Set(asked)
        var products: [Int64: Product] = [:]
        var unusable: [Int64: String] = [:]
        for entry in list {
            guard case .int(let id)? = entry["product_id"], wanted.contains(id), unusable[id] == nil else { continue }
            switch Self.product(id: id, entry) {
            case .success(let p):
                if let seen = products[id], seen != p {
                    products[id] = nil
                    unusable[id] = "two different entries"
                } else {
                    products[id] = p
                }
            case .failure(let why):
                products[id] = nil
                unusable[id] = why.reason
            }
        }
        var seen = Set<Int64>()
        self.init(products: products, notFound: asked.filter { products[$0] == nil && seen.insert($0).inserted }, unusable: unusable)
    }

    private struct Unusable: Error { let reason: String }

    private static func product(id: Int64, _ entry: JSON) -> Result<Product, Unusable> {
        guard case .string(let name)? = entry["name"] else { return .failure(Unusable(reason: "name is not a string")) }
        if let problem = Product.nameProblem(name) { return .failure(Unusable(reason: problem)) }
        let price: Money?
        switch entry["price"] {
        case .string(let s)?, .number(let s)?: price = Money(s)
        case .int(let v)?: price = Money(units: v)
        default: price = nil
        }
        guard let price else { return .failure(Unusable(reason: "price is not an amount between 0 and \(Money.max)")) }
        guard let product = Product(productId: id, name: name, price: price) else { return .failure(Unusable(reason: "product_id below 1")) }
        return .success(product)
    }
}

/// CONTRACT section 5 over Kafka: `inventory_check` → `inventory_check_results`.
public struct KafkaInventoryChecker: InventoryChecker {
    let client: UpstreamClient
    let topics: Topics

    public init(client: UpstreamClient, topics: Topics) {
        self.client = client
        self.topics = topics
    }

    public func check(_ lines: [(productId: Int64, quantity: Int)]) async throws(UpstreamFailure) -> [StockLine] {
        let (_, reply) = try await client.request(
            service: "inventory", topic: topics.inventoryCheckRequests, replyTopic: topics.inventoryCheckReplies
        ) { id in
            .object([
                ("request_id", .string(id)),
                ("items", .array(lines.map { .object([("product_id", .int($0.productId)), ("quantity", .int(Int64($0.quantity)))]) })),
            ])
        }
        return try Self.stock(reply: reply, asked: lines)
    }

    /// Reads an `inventory_check_results` reply: the one place where availability enters the
    /// service. Entries of asked-for products need an integer `available` ≥ 0, and two entries for
    /// one product must agree; otherwise the whole answer is unusable (`badReply`: the
    /// create_order fails with `upstream_timeout` and changes nothing). Entries of other
    /// products are ignored; a product the answer does not mention has nothing available.
    static func stock(reply: JSON, asked lines: [(productId: Int64, quantity: Int)]) throws(UpstreamFailure) -> [StockLine] {
        guard case .array(let items)? = reply["items"] else {
            throw .badReply(service: "inventory", reason: "items is missing or not an array")
        }
        let wanted = Set(lines.map(\.productId))
        var available: [Int64: Int] = [:]
        for item in items {
            guard case .int(let id)? = item["product_id"], wanted.contains(id) else { continue }
            guard case .int(let a)? = item["available"], a >= 0 else {
                throw .badReply(service: "inventory", reason: "available of product \(id) is not an integer ≥ 0")
            }
            let amount = Int(clamping: a)
            if let seen = available[id], seen != amount {
                throw .badReply(service: "inventory", reason: "two different entries for product \(id)")
            }
            available[id] = amount
        }
        return lines.map { StockLine(productId: $0.productId, requested: $0.quantity, available: available[$0.productId] ?? 0) }
    }
}
