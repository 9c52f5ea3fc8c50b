"""Customer support: orders, refunds, cancellations and tickets over an in-memory shop.

Example:
    >>> from agentgym_runtime.scenarios.customer_support import CustomerSupportScenario
    >>> support = CustomerSupportScenario()
    >>> world = support.new_world(0)
    >>> box = support.toolbox(world)
    >>> order_id = min(world.orders)
    >>> box.call("get_order", {"order_id": order_id})["order_id"] == order_id
    True
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agentgym_runtime.scenarios.base import ExpectedCall, Scenario, Split
from agentgym_runtime.tools import Tool, tool

Reason = Literal["damaged", "late", "wrong_item", "other"]
Priority = Literal["low", "normal", "high"]

_TRAIN_NAMES = (
    "ana",
    "ben",
    "carla",
    "dev",
    "eva",
    "femi",
    "gus",
    "hana",
    "ivan",
    "jade",
    "kofi",
    "lena",
    "milo",
    "nora",
    "otto",
    "pia",
    "raj",
    "sofia",
    "tom",
    "ugo",
    "vera",
    "will",
    "xena",
    "yusuf",
    "zoe",
    "alba",
    "bruno",
    "cleo",
)
_HELDOUT_NAMES = ("mara", "nils", "olga", "pavel", "quinn", "rosa", "sami", "tara", "uma", "viktor", "wen", "yara")
_ITEMS = ("lamp", "kettle", "backpack", "headphones", "jacket", "blender", "monitor", "chair")
_STATUSES = ("processing", "shipped", "delivered")
_ORDERS_PER_SPLIT = 150


@dataclass
class Order:
    """One order in the shop."""

    order_id: int
    email: str
    item: str
    status: str
    total: float
    split: Split


@dataclass
class ShopWorld:
    """The in-memory shop one episode works on."""

    orders: dict[int, Order] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)  # email -> name
    refunds: dict[int, str] = field(default_factory=dict)  # order id -> reason
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def orders_of(self, split: Split) -> list[Order]:
        """Orders belonging to one split's customers, by id."""
        return sorted((o for o in self.orders.values() if o.split == split), key=lambda o: o.order_id)


#: Request phrasings, shared by both splits: the splits differ by customer and order (a tiny demo
#: model does not generalise to unseen phrasings; a real model's held-out set may differ more).
_BODIES: dict[str, tuple[str, ...]] = {
    "order_status": (
        "What is the status of order {ref}?",
        "Can you check the status of my order {ref}?",
        "Could you tell me the status of order {ref}?",
        "Status update on order {ref}, please?",
    ),
    "customer_lookup": (
        "Which customer has the email {email}?",
        "Look up the account for {email} please.",
        "Find the customer whose email is {email}.",
        "Who owns the account {email}?",
    ),
    "customer_lookup_list": ("List the accounts with the email {email}.", "Find every account for the email {email}."),
    "refund": (
        "I want a refund for order {ref}{because}.",
        "Please refund order {ref}{because}.",
        "Could I get a refund on order {ref}{because}?",
        "Refund order {ref} for me{because}.",
    ),
    "refund_money_back": (
        "I want my money back for order {ref}{because}.",
        "Can I have my money back for order {ref}{because}?",
    ),
    "cancel": (
        "Please cancel order {ref}.",
        "I need to cancel my order {ref}.",
        "Cancel my order {ref}, please.",
        "Could you cancel order {ref}?",
    ),
    "ticket": (
        "Open a ticket for order {ref}, {urgency}.",
        "I need a support ticket for order {ref}, {urgency}.",
        "Please file a ticket about order {ref}, {urgency}.",
        "Raise a ticket for order {ref}, {urgency}.",
    ),
}
_GREETINGS: tuple[str, ...] = (
    "Hi, this is {name}.",
    "Hello, {name} here.",
    "Hey team, {name} writing.",
    "This is {name}.",
    "Hi there, I am {name}.",
    "Good afternoon, this is {name}.",
    "Good morning, {name} speaking.",
    "Hello again, it is {name}.",
    "Dear support, {name} here.",
)
_BECAUSE: dict[str, str] = {
    "damaged": " because it arrived damaged",
    "late": " because it came late",
    "wrong_item": " because it was the wrong item",
}
_URGENCY: dict[str, tuple[str, ...]] = {"low": ("no rush",), "normal": ("when you can",), "high": ("asap",)}


class CustomerSupportScenario(Scenario):
    """A support agent answering customers of a small web shop with five tools.

    Tools: ``get_order``, ``find_customer``, ``refund_order``, ``cancel_order``, ``open_ticket``.
    Train and held-out tasks come from different customers (28 vs 12 names) and different
    orders (disjoint sets of order numbers); the requests are phrased alike.

    Example:
        >>> s = CustomerSupportScenario()
        >>> sorted(t.name for t in s.tools())
        ['cancel_order', 'find_customer', 'get_order', 'open_ticket', 'refund_order']
    """

    name: ClassVar[str] = "customer_support"
    description: ClassVar[str] = (
        "A support agent for a web shop: looks up orders and customers, refunds, cancels and opens tickets."
    )
    difficulty: ClassVar[str] = "easy"
    estimated_time: ClassVar[str] = "about 5 minutes on a laptop CPU with the tiny demo model"
    hallucinated_tools: ClassVar[dict[str, str]] = {
        "refund_order": "issue_refund",
        "get_order": "lookup_order",
        "cancel_order": "cancel",
        "open_ticket": "create_ticket",
        "find_customer": "get_customer",
    }

    def new_world(self, seed: int) -> ShopWorld:
        """A shop with 150 orders per split; statuses, items and totals drawn from ``seed``."""
        rng = random.Random(f"customer_support-world:{seed}")
        world = ShopWorld()
        ids = rng.sample(range(1000, 10000), 2 * _ORDERS_PER_SPLIT)  # one id range, disjoint sets per split
        for index, (split, names) in enumerate((("train", _TRAIN_NAMES), ("heldout", _HELDOUT_NAMES))):
            for name in names:
                world.customers[f"{name}@example.com"] = name.capitalize()
            for order_id in sorted(ids[index * _ORDERS_PER_SPLIT : (index + 1) * _ORDERS_PER_SPLIT]):
                world.orders[order_id] = Order(
                    order_id=order_id,
                    email=f"{rng.choice(names)}@example.com",
                    item=rng.choice(_ITEMS),
                    status=rng.choice(_STATUSES),
                    total=round(rng.uniform(5, 400), 2),
                    split=split,  # type: ignore[arg-type]
                )
        return world

    def build_tools(self, world: ShopWorld) -> list[Tool[..., Any]]:
        """The five shop tools, bound to ``world``."""

        def _order(order_id: int) -> Order:
            found = world.orders.get(order_id)
            if found is None:
                raise LookupError(f"no order {order_id}")
            return found

        @tool
        def get_order(order_id: int) -> dict[str, Any]:
            """Look up an order's status, item and total.

            Args:
                order_id: The order number.
            """
            order = _order(order_id)
            return {"order_id": order.order_id, "status": order.status, "item": order.item, "total": order.total}

        @tool
        def find_customer(email: str) -> dict[str, Any]:
            """Find a customer by email address.

            Args:
                email: The customer's email address.
            """
            name = world.customers.get(email.strip().lower())
            if name is None:
                raise LookupError(f"no customer with email {email}")
            orders = sorted(o.order_id for o in world.orders.values() if o.email == email.strip().lower())
            return {"name": name, "email": email, "orders": orders}

        @tool
        def refund_order(order_id: int, reason: Reason) -> dict[str, Any]:
            """Refund a delivered order.

            Args:
                order_id: The order number.
                reason: Why: damaged, late, wrong_item or other.
            """
            order = _order(order_id)
            if order.order_id in world.refunds:
                raise ValueError(f"order {order_id} was already refunded")
            if order.status != "delivered":
                raise ValueError(f"order {order_id} is {order.status}; only delivered orders can be refunded")
            world.refunds[order.order_id] = reason
            order.status = "refunded"
            return {"order_id": order.order_id, "status": "refunded", "amount": order.total}

        @tool
        def cancel_order(order_id: int) -> dict[str, Any]:
            """Cancel an order that has not shipped yet.

            Args:
                order_id: The order number.
            """
            order = _order(order_id)
            if order.status != "processing":
                raise ValueError(f"order {order_id} is {order.status}; only processing orders can be cancelled")
            order.status = "cancelled"
            return {"order_id": order.order_id, "status": "cancelled"}

        @tool
        def open_ticket(order_id: int, priority: Priority) -> dict[str, Any]:
            """Open a support ticket about an order.

            Args:
                order_id: The order number.
                priority: low, normal or high.
            """
            order = _order(order_id)
            ticket_id = f"T-{order.order_id}"
            world.tickets[ticket_id] = {"order_id": order.order_id, "priority": priority}
            return {"ticket_id": ticket_id, "priority": priority}

        return [get_order, find_customer, refund_order, cancel_order, open_ticket]

    def make_task(self, world: ShopWorld, split: Split, rng: random.Random) -> Mapping[str, Any]:
        """One support request; about a third of them use a phrasing that provokes a known model mistake."""
        orders = world.orders_of(split)
        intent = rng.choice(("order_status", "customer_lookup", "refund", "cancel", "ticket"))
        pitfall: str | None = None
        if intent == "order_status":
            order = rng.choice(orders)
            calls = [ExpectedCall("get_order", {"order_id": order.order_id})]
            answer = order.status
        elif intent == "customer_lookup":
            email = rng.choice(sorted({o.email for o in orders}))
            calls = [ExpectedCall("find_customer", {"email": email})]
            answer = world.customers[email]
            if rng.random() < 0.5:
                intent, pitfall = "customer_lookup_list", "wrong_type"  # "list ... accounts": the model sends a list
        elif intent == "refund":
            order = rng.choice([o for o in orders if o.status == "delivered"])
            reason = rng.choice(("damaged", "late", "wrong_item", "other"))
            calls = [ExpectedCall("refund_order", {"order_id": order.order_id, "reason": reason})]
            answer = "refunded"
            if rng.random() < 0.4:
                intent, pitfall = "refund_money_back", "hallucinated_tool"
            elif reason == "other":
                pitfall = "missing_argument"  # no reason stated: the model leaves the required argument out
        elif intent == "cancel":
            order = rng.choice([o for o in orders if o.status == "processing"])
            calls = [ExpectedCall("cancel_order", {"order_id": order.order_id})]
            answer = "cancelled"
        else:
            order = rng.choice(orders)
            priority = rng.choice(("low", "normal", "high"))
            calls = [ExpectedCall("open_ticket", {"order_id": order.order_id, "priority": priority})]
            answer = f"T-{order.order_id}"
        ref = str(calls[0].arguments.get("order_id", ""))
        if "order_id" in calls[0].arguments and pitfall is None and rng.random() < 0.4:
            ref, pitfall = f"#{ref}", "wrong_type"  # "#1234": the model passes the id as a string
        urgency = ""
        if calls[0].name == "open_ticket":
            priority = str(calls[0].arguments["priority"])
            if priority == "high" and pitfall is None and rng.random() < 0.8:
                urgency, pitfall = "urgent", "malformed_json"  # the model breaks its JSON on "urgent"
            else:
                urgency = rng.choice(_URGENCY[priority])
        because = _BECAUSE.get(str(calls[0].arguments.get("reason", "other")), "")
        name = world.customers[calls[0].arguments["email"]] if "email" in calls[0].arguments else None
        if name is None:
            order_email = world.orders[int(calls[0].arguments["order_id"])].email
            name = world.customers[order_email]
        greeting = rng.choice(_GREETINGS).format(name=name)
        body = rng.choice(_BODIES[intent]).format(
            ref=ref, email=calls[0].arguments.get("email", ""), because=because, urgency=urgency
        )
        return {
            "prompt": f"{greeting} {body}",
            "expected_calls": tuple(calls),
            "expected_answer": answer,
            "intent": {"refund_money_back": "refund", "customer_lookup_list": "customer_lookup"}.get(intent, intent),
            "pitfall": pitfall,
        }
