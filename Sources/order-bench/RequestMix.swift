import Kafka
import OrderCore

struct RequestMix {
    let firstUser: Int
    let users: Int
    let products: Int
    var kind: Kind = .contract

    /// What the requests are: the mix, or one path of it alone, so that a run shows what
    /// each part of the pipeline costs (`--mix`).
    enum Kind: String, CaseIterable {
        /// The performance issue's mix (below).
        case contract
        /// Every request an add_item that validation refuses (quantity 0): the Kafka hops, decoding
        /// and the error reply, with neither the database nor an upstream service.
        case invalid
        /// Every request a get_cart: the cart batch's round trips as well, no upstream service.
        case getCart = "get_cart"
        /// Every request an add_item: the Product Service look-up as well.
        case addItem = "add_item"
    }

    struct Body {
        var action: String
        var user: Int
        var fields: [(String, JSON)]
        func json(id: String) -> JSON {
            .object([("request_id", .string(id)), ("action", .string(action)), ("user_id", .int(Int64(user)))] + fields)
        }
    }

    /// `contract`: 60% add_item, 15% get_cart, 10% update_item, 5% remove_item, 5% create_order, 5% list_orders.
    func next(_ g: inout SystemRandomNumberGenerator, topics: Topics) -> (String, Body) {
        let user = firstUser + Int.random(in: 0..<users, using: &g)
        let product = Int64(1 + Int.random(in: 0..<products, using: &g))
        switch kind {
        case .contract: break
        case .invalid: return (topics.cartRequests, Body(action: "add_item", user: user, fields: [("product_id", .int(product)), ("quantity", .int(0))]))
        case .getCart: return (topics.cartRequests, Body(action: "get_cart", user: user, fields: []))
        case .addItem:
            return (topics.cartRequests, Body(action: "add_item", user: user, fields: [("product_id", .int(product)), ("quantity", .int(Int64.random(in: 1...3, using: &g)))]))
        }
        let roll = Int.random(in: 0..<100, using: &g)
        switch roll {
        case 0..<60:
            return (topics.cartRequests, Body(action: "add_item", user: user, fields: [("product_id", .int(product)), ("quantity", .int(Int64.random(in: 1...3, using: &g)))]))
        case 60..<75: return (topics.cartRequests, Body(action: "get_cart", user: user, fields: []))
        case 75..<85:
            return (topics.cartRequests, Body(action: "update_item", user: user, fields: [("product_id", .int(product)), ("quantity", .int(Int64.random(in: 1...5, using: &g)))]))
        case 85..<90: return (topics.cartRequests, Body(action: "remove_item", user: user, fields: [("product_id", .int(product))]))
        case 90..<95: return (topics.orderRequests, Body(action: "create_order", user: user, fields: []))
        default: return (topics.orderRequests, Body(action: "list_orders", user: user, fields: []))
        }
    }
}
