"""Generated function-calling instances that teach calling tools in general, offline.

Where each instance comes from: nothing is downloaded or copied from a dataset. A fixed catalogue
of tools is built from the `DOMAINS` table below (a noun, the actions on it, the kinds of
arguments it takes): one tool per (domain, action), about 240 in all, named in three styles
(`search_hotels`, `hotels.search`, `searchHotels`). Each tool's arguments are drawn once, by a
random generator seeded with its domain and action, from `ARGUMENT_KINDS`: strings, integers, numbers,
booleans, enums, arrays of strings/integers/numbers/enums and nested objects, some required and
some optional. An instance then picks one tool (or two or three calls: the same tool twice, or
different tools), draws a value for every required argument and for some optional ones, and
writes a request that states each value (phrasings vary per argument kind and per request; some
name the argument explicitly, as BFCL's questions often do). Up to three other tools are offered
beside the called ones. The gold calls are exactly the stated values, so a model can only pass by
reading the request and the schemas. Each instance's data records `generator: fncall_generator`
(BFCL instances record `source_id` and `category` instead).

The tool names and requests are disjoint from BFCL's (the held-out evaluation): tests and the
`fncall-cpu` preset check that with r3fast.tasks.heldout.check_disjoint.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from r3fast.tasks.base import Instance
from r3fast.tasks.function_calling import function_calling_instance

# ----------------------------------------------------------------------------- value pools

_CITIES = ("Lisbon", "Accra", "Quito", "Tallinn", "Perth", "Osaka", "Bergen", "Cusco", "Gdansk", "Porto",
           "Tbilisi", "Hobart", "Leeds", "Busan", "Valencia", "Da Nang", "Kraków", "Zanzibar", "Halifax", "Cork")
_COUNTRIES = ("Portugal", "Ghana", "Ecuador", "Estonia", "Australia", "Japan", "Norway", "Peru", "Poland",
              "Georgia", "Korea", "Spain", "Vietnam", "Canada", "Ireland", "Chile", "Kenya", "Morocco")
_PEOPLE = ("Maya Lindqvist", "Omar Haddad", "Priya Raman", "Tomás Ferreira", "Yuki Tanaka", "Grace Okafor",
           "Lena Novak", "Felix Brandt", "Ines Duarte", "Kwame Mensah", "Sofia Rossi", "Arjun Mehta")
_USERS = ("maya_l", "omar.h", "priya99", "tferreira", "yuki_t", "gokafor", "lnovak", "fbrandt", "ines.d")
_DOMAINS_MAIL = ("example.com", "mail.test", "acme.org", "studio.dev")
_TITLES = ("Spring budget review", "Garden party", "Onboarding plan", "Roof repair", "Team offsite",
           "Thesis draft", "Harvest festival", "Quarterly goals", "Bike tune-up", "Recital rehearsal")
_TOPICS = ("solar panels", "sourdough", "electric bikes", "jazz piano", "marathon training", "tiny houses",
           "rock climbing", "coral reefs", "chess openings", "urban gardens", "remote work", "watercolour")
_LANGUAGES = ("French", "Swahili", "Korean", "Portuguese", "Polish", "Hindi", "Turkish", "Dutch")
_CURRENCIES = ("EUR", "GHS", "JPY", "NOK", "PLN", "AUD", "CAD", "KRW", "CHF")
_COLOURS = ("teal", "maroon", "ivory", "olive", "navy", "coral", "mustard", "charcoal")
_TICKERS = ("NVTX", "QRLA", "BXMT", "ZENO", "KLPR", "FYRA", "OMNX")
_PRODUCTS = ("standing desk", "espresso grinder", "trail shoes", "noise-cancelling headphones", "rice cooker",
             "camping stove", "mechanical keyboard", "yoga mat", "air purifier", "e-reader")
_MESSAGES = ("running ten minutes late", "the keys are under the mat", "call me after lunch",
             "bring the projector", "dinner is at eight", "the parcel arrived safely")
_STREETS = ("12 Rua Augusta", "48 Kings Road", "7 Avenida Central", "230 Elm Street", "5 Fjordgata")
_INGREDIENTS = ("chickpeas", "spinach", "lemon", "garlic", "quinoa", "tofu", "basil", "mushrooms", "paprika")
_TAGS = ("urgent", "family", "work", "travel", "finance", "health", "school", "hobby")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _pick(pool: Sequence) -> Callable[[random.Random], Any]:
    return lambda rng: rng.choice(pool)


def _date(rng: random.Random) -> str:
    return f"{rng.randint(2025, 2027)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(6, 22):02d}:{rng.choice((0, 15, 30, 45)):02d}"


def _email(rng: random.Random) -> str:
    return f"{rng.choice(_USERS).replace('.', '_')}@{rng.choice(_DOMAINS_MAIL)}"


def _decimal(low: float, high: float, places: int = 1) -> Callable[[random.Random], float]:
    return lambda rng: round(rng.uniform(low, high), places)


def _integer(low: int, high: int) -> Callable[[random.Random], int]:
    return lambda rng: rng.randint(low, high)


def _several(draw: Callable[[random.Random], Any], low: int = 2, high: int = 3) -> Callable[[random.Random], list]:
    """A list of `low` to `high` distinct values (fewer when the pool runs out)."""
    def sample(rng: random.Random) -> list:
        size, out = rng.randint(low, high), []
        for _ in range(20 * high):
            if len(out) == size:
                break
            value = draw(rng)
            if value not in out:
                out.append(value)
        return out

    return sample


# ----------------------------------------------------------------------------- argument kinds

def _text(value: Any) -> str:
    """A value as a request writes it: lists as 'a, b and c', booleans never (their phrases say them)."""
    if isinstance(value, list):
        items = [_text(v) for v in value]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return str(value)


@dataclass(frozen=True)
class ArgumentKind:
    """One kind of argument: its schema, how to draw a value, and how a request states that value."""
    name: str                                  # the argument's name in the tool schema
    schema: dict                               # its JSON schema (type, description, enum/items/properties)
    draw: Callable[[random.Random], Any]       # a gold value
    phrases: tuple[str, ...]                   # templates with {v} (the value as text) or the object's fields

    def state(self, value: Any, rng: random.Random, explicit: bool) -> str:
        """The request's words for `value`; `explicit` names the argument, BFCL style (where=x)."""
        if self.schema["type"] == "boolean":
            return self.phrases[0 if value else 1]
        if explicit and self.schema["type"] in ("string", "integer", "number"):
            return rng.choice((f"with {self.name}={value}", f"{self.name} {value}", f"{self.name} set to {value}"))
        if self.schema["type"] == "object":
            return rng.choice(self.phrases).format(**{k: _text(v) for k, v in value.items()})
        return rng.choice(self.phrases).format(v=_text(value))


def _kind(name: str, type_: str, description: str, draw, *phrases: str, **schema: Any) -> ArgumentKind:
    return ArgumentKind(name, {"type": type_, "description": description, **schema}, draw, phrases)


def _flag(name: str, description: str, yes: str, no: str) -> ArgumentKind:
    return ArgumentKind(name, {"type": "boolean", "description": description}, lambda rng: rng.random() < 0.5, (yes, no))


def _enum(name: str, description: str, values: Sequence[str], *phrases: str) -> ArgumentKind:
    return _kind(name, "string", description, _pick(values), *phrases, enum=list(values))


def _array(name: str, description: str, items: dict, draw, *phrases: str) -> ArgumentKind:
    return _kind(name, "array", description, _several(draw), *phrases, items=items)


def _object(name: str, description: str, fields: dict[str, tuple[dict, Callable]], required: Sequence[str],
            *phrases: str) -> ArgumentKind:
    """A nested object; every phrase states all fields, so every field is drawn (optional ones included)."""
    def draw(rng: random.Random) -> dict:
        return {k: sample(rng) for k, (_, sample) in fields.items()}

    schema = {"properties": {k: s for k, (s, _) in fields.items()}, "required": list(required)}
    return _kind(name, "object", description, draw, *phrases, **schema)


ARGUMENT_KINDS: dict[str, ArgumentKind] = {k.name: k for k in (
    _kind("city", "string", "City name.", _pick(_CITIES), "in {v}", "for {v}", "around {v}"),
    _kind("country", "string", "Country name.", _pick(_COUNTRIES), "in {v}", "for {v}"),
    _kind("person_name", "string", "Full name of the person.", _pick(_PEOPLE), "for {v}", "under the name {v}"),
    _kind("username", "string", "Account handle.", _pick(_USERS), "for the user {v}", "of account {v}"),
    _kind("email", "string", "Email address.", _email, "for {v}", "using the address {v}"),
    _kind("title", "string", "Title.", _pick(_TITLES), "titled '{v}'", "called '{v}'", "named \"{v}\""),
    _kind("topic", "string", "Subject to search for.", _pick(_TOPICS), "about {v}", "on {v}", "related to {v}"),
    _kind("language", "string", "Language name.", _pick(_LANGUAGES), "in {v}"),
    _kind("date", "string", "Date as YYYY-MM-DD.", _date, "on {v}", "for {v}", "dated {v}"),
    _kind("time", "string", "Time as HH:MM, 24-hour clock.", _time, "at {v}"),
    _kind("currency", "string", "ISO 4217 currency code.", _pick(_CURRENCIES), "in {v}", "paid in {v}"),
    _kind("colour", "string", "Colour name.", _pick(_COLOURS), "in {v}", "coloured {v}"),
    _kind("ticker", "string", "Stock ticker symbol.", _pick(_TICKERS), "for {v}", "for the ticker {v}"),
    _kind("product", "string", "Product name.", _pick(_PRODUCTS), "for a {v}", "for the {v}"),
    _kind("message", "string", "Text of the message.", _pick(_MESSAGES), "saying '{v}'", "with the text \"{v}\""),
    _kind("address", "string", "Street address.", _pick(_STREETS), "at {v}", "for the address {v}"),
    _kind("limit", "integer", "Maximum number of results.", _integer(2, 50), "limited to {v} results",
          "showing at most {v}", "top {v}"),
    _kind("quantity", "integer", "How many.", _integer(2, 40), "a quantity of {v}", "{v} of them"),
    _kind("guests", "integer", "Number of people.", _integer(2, 12), "for {v} people", "for a party of {v}"),
    _kind("year", "integer", "Four-digit year.", _integer(1950, 2026), "from {v}", "for the year {v}"),
    _kind("days", "integer", "Number of days.", _integer(2, 30), "for {v} days", "over {v} days"),
    _kind("duration_minutes", "integer", "Length in minutes.", _integer(10, 180), "lasting {v} minutes",
          "for {v} minutes"),
    _kind("min_rating", "integer", "Lowest rating, 1 to 5.", _integer(2, 5), "rated at least {v} stars",
          "with {v} stars or more"),
    _kind("page", "integer", "Results page, from 1.", _integer(2, 9), "page {v}", "on results page {v}"),
    _kind("amount", "number", "Amount of money.", _decimal(5, 2000, 2), "of {v}", "for an amount of {v}"),
    _kind("max_price", "number", "Highest price.", _decimal(10, 900, 1), "under {v}", "costing at most {v}"),
    _kind("weight_kg", "number", "Weight in kilograms.", _decimal(0.5, 80, 1), "weighing {v} kg", "of {v} kilograms"),
    _kind("radius_km", "number", "Search radius in kilometres.", _decimal(0.5, 25, 1), "within {v} km",
          "in a {v} km radius"),
    _kind("percentage", "number", "Percentage, 0 to 100.", _decimal(1, 99, 1), "at {v} percent", "of {v}%"),
    _kind("temperature", "number", "Temperature in degrees.", _decimal(15, 28, 1), "to {v} degrees",
          "at {v} degrees"),
    _flag("include_images", "Whether to include images.", "with images", "without images"),
    _flag("urgent", "Mark as urgent.", "marked urgent", "marked as not urgent"),
    _flag("public", "Visible to everyone.", "made public", "kept private"),
    _flag("notify", "Send a notification.", "and notify everyone", "without notifying anyone"),
    _flag("refundable", "Only refundable options.", "refundable only", "including non-refundable ones"),
    _flag("detailed", "Return full details.", "with full details", "as a short summary"),
    _enum("unit", "Temperature unit.", ("celsius", "fahrenheit"), "in {v}", "in degrees {v}"),
    _enum("units", "Measurement system.", ("metric", "imperial"), "in {v} units", "using {v} units"),
    _enum("sort_order", "Sort direction.", ("ascending", "descending"), "in {v} order", "sorted {v}"),
    _enum("priority", "Priority level.", ("low", "normal", "high"), "with {v} priority", "at {v} priority"),
    _enum("file_format", "Output format.", ("pdf", "csv", "json", "xlsx"), "as {v}", "in {v} format"),
    _enum("travel_mode", "How to travel.", ("driving", "walking", "cycling", "transit"), "by {v}",
          "for {v}"),
    _enum("size", "Size.", ("small", "medium", "large"), "in size {v}", "{v} sized"),
    _enum("cabin", "Cabin class.", ("economy", "premium", "business"), "in {v} class", "flying {v}"),
    _enum("frequency", "How often.", ("daily", "weekly", "monthly"), "repeating {v}", "{v}"),
    _enum("status", "Status to filter by.", ("open", "pending", "closed"), "that are {v}", "with status {v}"),
    _array("tags", "Labels to attach.", {"type": "string"}, _pick(_TAGS), "tagged {v}", "with the tags {v}"),
    _array("recipients", "Email addresses to send to.", {"type": "string"}, _email, "to {v}", "addressed to {v}"),
    _array("ingredients", "Ingredients to use.", {"type": "string"}, _pick(_INGREDIENTS), "with {v}",
           "using {v}"),
    _array("item_ids", "Numeric item identifiers.", {"type": "integer"}, _integer(100, 9999), "for items {v}",
           "with the ids {v}"),
    _array("values", "Numbers to use.", {"type": "number"}, _decimal(-50, 500, 1), "from the numbers {v}",
           "over {v}"),
    _array("cities", "City names.", {"type": "string"}, _pick(_CITIES), "covering {v}", "in {v}"),
    _array("weekdays", "Days of the week.", {"type": "string", "enum": list(_WEEKDAYS)}, _pick(_WEEKDAYS),
           "on {v}", "every {v}"),
    _object("location", "Where.", {"city": ({"type": "string"}, _pick(_CITIES)),
                                   "country": ({"type": "string"}, _pick(_COUNTRIES))}, ("city",),
            "in {city}, {country}", "located in {city} ({country})"),
    _object("dimensions", "Size in centimetres.", {"width": ({"type": "number"}, _decimal(5, 300, 1)),
                                                   "height": ({"type": "number"}, _decimal(5, 300, 1))},
            ("width", "height"), "measuring {width} by {height} cm", "of {width} cm wide and {height} cm high"),
    _object("price_range", "Accepted prices.", {"min_price": ({"type": "number"}, _integer(5, 60)),
                                                "max_price": ({"type": "number"}, _integer(80, 900))},
            ("max_price",), "priced between {min_price} and {max_price}", "from {min_price} up to {max_price}"),
    _object("date_range", "Period, inclusive.", {"start": ({"type": "string"}, _date),
                                                 "end": ({"type": "string"}, _date)},
            ("start", "end"), "from {start} to {end}", "between {start} and {end}"),
    _object("contact", "Who to reach.", {"name": ({"type": "string"}, _pick(_PEOPLE)),
                                         "email": ({"type": "string"}, _email)}, ("name",),
            "for {name} ({email})", "with contact {name}, {email}"),
    _object("coordinates", "A point on Earth.", {"latitude": ({"type": "number"}, _decimal(-60, 60, 3)),
                                                 "longitude": ({"type": "number"}, _decimal(-170, 170, 3))},
            ("latitude", "longitude"), "at latitude {latitude} and longitude {longitude}",
            "at coordinates {latitude}, {longitude}"),
)}

# ----------------------------------------------------------------------------- domains and actions

# action -> how a request asks for it; {noun} singular, {nouns} plural
ACTIONS: dict[str, tuple[str, ...]] = {
    "search": ("search for {nouns}", "find {nouns}", "look up {nouns}", "browse {nouns}"),
    "list": ("list the {nouns}", "list all {nouns}", "see the {nouns}"),
    "get": ("get the {noun}", "fetch the {noun}", "show the {noun}", "retrieve the {noun}"),
    "create": ("create a {noun}", "add a new {noun}", "set up a {noun}"),
    "update": ("update the {noun}", "change the {noun}", "edit the {noun}"),
    "cancel": ("cancel the {noun}", "delete the {noun}", "remove the {noun}"),
    "book": ("book a {noun}", "reserve a {noun}"),
    "send": ("send a {noun}", "dispatch a {noun}"),
    "estimate": ("estimate the {noun}", "calculate the {noun}", "work out the {noun}"),
    "track": ("track the {noun}", "check the status of the {noun}"),
    "export": ("export the {nouns}", "download the {nouns}"),
    "rate": ("rate the {noun}", "leave a rating for the {noun}"),
}

# (noun, plural, name stem, actions, argument kinds in order of how often a tool needs them)
DOMAINS: tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("hotel room", "hotel rooms", "hotel_room", ("search", "book", "cancel", "rate"),
     ("city", "date_range", "guests", "max_price", "min_rating", "refundable", "sort_order")),
    ("flight seat", "flight seats", "flight_seat", ("search", "book", "cancel", "track"),
     ("cities", "date", "cabin", "guests", "max_price", "refundable")),
    ("restaurant table", "restaurant tables", "table", ("search", "book", "cancel"),
     ("city", "date", "time", "guests", "min_rating", "radius_km")),
    ("recipe", "recipes", "recipe", ("search", "get", "create", "rate"),
     ("ingredients", "duration_minutes", "language", "detailed", "limit", "include_images")),
    ("film screening", "film screenings", "screening", ("search", "book", "list"),
     ("city", "date", "time", "guests", "language", "sort_order")),
    ("audiobook", "audiobooks", "audiobook", ("search", "get", "rate", "list"),
     ("topic", "language", "duration_minutes", "min_rating", "limit", "year")),
    ("podcast episode", "podcast episodes", "podcast_episode", ("search", "list", "get"),
     ("topic", "language", "duration_minutes", "limit", "sort_order", "year")),
    ("concert ticket", "concert tickets", "concert_ticket", ("search", "book", "cancel"),
     ("city", "date_range", "quantity", "price_range", "notify")),
    ("job posting", "job postings", "job_posting", ("search", "create", "update", "export"),
     ("topic", "location", "limit", "status", "file_format", "public")),
    ("apartment listing", "apartment listings", "apartment", ("search", "create", "export"),
     ("location", "price_range", "guests", "include_images", "sort_order", "limit")),
    ("rental car", "rental cars", "rental_car", ("search", "book", "cancel"),
     ("city", "date_range", "size", "max_price", "refundable")),
    ("parcel", "parcels", "parcel", ("track", "send", "estimate"),
     ("address", "weight_kg", "dimensions", "priority", "notify", "contact")),
    ("purchase order", "purchase orders", "purchase_order", ("create", "update", "cancel", "export"),
     ("product", "item_ids", "quantity", "currency", "priority", "tags", "file_format")),
    ("invoice", "invoices", "invoice", ("create", "send", "export", "list"),
     ("contact", "amount", "currency", "date", "file_format", "status")),
    ("meeting", "meetings", "meeting", ("create", "update", "cancel", "list"),
     ("title", "date", "time", "duration_minutes", "recipients", "notify")),
    ("reminder", "reminders", "reminder", ("create", "cancel", "list"),
     ("message", "date", "time", "frequency", "weekdays", "priority")),
    ("wake-up alarm", "wake-up alarms", "wakeup_alarm", ("create", "update", "cancel"),
     ("time", "weekdays", "title", "frequency")),
    ("to-do item", "to-do items", "todo_item", ("create", "update", "list", "export"),
     ("title", "date", "priority", "tags", "status", "file_format")),
    ("address book entry", "address book entries", "addressbook_entry", ("create", "update", "search"),
     ("person_name", "email", "address", "tags", "limit")),
    ("text message", "text messages", "text_message", ("send", "list"),
     ("person_name", "message", "urgent", "date", "limit")),
    ("newsletter", "newsletters", "newsletter", ("send", "create", "list"),
     ("title", "recipients", "topic", "date", "include_images", "language")),
    ("playlist", "playlists", "playlist", ("create", "update", "export", "list"),
     ("title", "topic", "duration_minutes", "public", "tags", "file_format")),
    ("support case", "support cases", "support_case", ("create", "update", "list", "export"),
     ("message", "priority", "status", "email", "tags", "file_format")),
    ("weather outlook", "weather outlooks", "weather_outlook", ("get", "export"),
     ("city", "days", "unit", "detailed", "file_format")),
    ("pollen level", "pollen levels", "pollen_level", ("get", "track"),
     ("city", "date", "detailed", "coordinates")),
    ("share price", "share prices", "share_price", ("get", "track", "export"),
     ("ticker", "date_range", "currency", "file_format", "detailed")),
    ("press article", "press articles", "press_article", ("search", "list", "export"),
     ("topic", "language", "date_range", "limit", "sort_order", "include_images")),
    ("gym class", "gym classes", "gym_class", ("search", "book", "cancel"),
     ("city", "date", "time", "weekdays", "duration_minutes")),
    ("clinic appointment", "clinic appointments", "clinic_appointment", ("book", "cancel", "update"),
     ("person_name", "date", "time", "urgent", "language", "notify")),
    ("museum visit", "museum visits", "museum_visit", ("search", "book"),
     ("city", "date", "guests", "language", "max_price")),
    ("hiking trail", "hiking trails", "hiking_trail", ("search", "get", "rate"),
     ("coordinates", "radius_km", "min_rating", "units", "include_images", "limit")),
    ("bike share dock", "bike share docks", "bike_dock", ("search", "get"),
     ("coordinates", "radius_km", "limit", "detailed")),
    ("train connection", "train connections", "train_connection", ("search", "book", "track"),
     ("cities", "date", "time", "cabin", "guests", "refundable")),
    ("commute route", "commute routes", "commute_route", ("estimate", "search"),
     ("cities", "travel_mode", "time", "units", "detailed")),
    ("parking space", "parking spaces", "parking_space", ("search", "book", "cancel"),
     ("address", "date", "time", "duration_minutes", "max_price", "size")),
    ("discount coupon", "discount coupons", "coupon", ("search", "create", "list"),
     ("product", "percentage", "date_range", "quantity", "public")),
    ("product review", "product reviews", "product_review", ("list", "create", "export"),
     ("product", "item_ids", "min_rating", "language", "limit", "sort_order", "include_images")),
    ("thermostat schedule", "thermostat schedules", "thermostat_schedule", ("update", "create", "get"),
     ("temperature", "unit", "weekdays", "time", "frequency")),
    ("garden plan", "garden plans", "garden_plan", ("create", "export", "estimate"),
     ("dimensions", "ingredients", "units", "file_format", "detailed")),
    ("cloud backup", "cloud backups", "cloud_backup", ("create", "list", "cancel"),
     ("title", "frequency", "date", "tags", "notify")),
    ("shared document", "shared documents", "shared_document", ("create", "export", "search"),
     ("title", "recipients", "file_format", "public", "language", "topic")),
    ("customer survey", "customer surveys", "customer_survey", ("create", "send", "export"),
     ("title", "recipients", "date_range", "language", "file_format")),
    ("loan repayment", "loan repayments", "loan_repayment", ("estimate", "list"),
     ("amount", "values", "percentage", "year", "currency", "detailed")),
    ("tip split", "tip splits", "tip_split", ("estimate",),
     ("amount", "percentage", "guests", "currency")),
    ("shipping quote", "shipping quotes", "shipping_quote", ("estimate", "list"),
     ("weight_kg", "dimensions", "country", "priority", "currency")),
    ("calorie count", "calorie counts", "calorie_count", ("estimate", "get"),
     ("ingredients", "quantity", "units", "detailed")),
    ("fuel budget", "fuel budgets", "fuel_budget", ("estimate",),
     ("cities", "travel_mode", "currency", "units")),
    ("language lesson", "language lessons", "language_lesson", ("book", "search", "cancel"),
     ("language", "date", "time", "duration_minutes", "weekdays", "person_name")),
    ("photo album", "photo albums", "photo_album", ("create", "export", "list"),
     ("title", "date_range", "tags", "public", "file_format", "recipients")),
    ("expense report", "expense reports", "expense_report", ("create", "export", "list"),
     ("amount", "values", "currency", "date_range", "file_format", "status", "tags")),
    ("stock watchlist", "stock watchlists", "stock_watchlist", ("create", "update", "get"),
     ("title", "ticker", "notify", "percentage")),
    ("volunteer shift", "volunteer shifts", "volunteer_shift", ("search", "book", "cancel"),
     ("city", "date", "time", "weekdays", "duration_minutes")),
    ("pet sitter", "pet sitters", "pet_sitter", ("search", "book", "rate"),
     ("location", "date_range", "max_price", "min_rating", "radius_km")),
    ("laundry pickup", "laundry pickups", "laundry_pickup", ("book", "cancel", "track"),
     ("address", "date", "time", "weight_kg", "urgent")),
    ("furniture delivery", "furniture deliveries", "furniture_delivery", ("book", "track", "estimate"),
     ("address", "date", "dimensions", "weight_kg", "contact", "notify")),
    ("ferry crossing", "ferry crossings", "ferry_crossing", ("search", "book", "cancel", "track"),
     ("cities", "date", "time", "guests", "cabin", "max_price")),
    ("campsite", "campsites", "campsite", ("search", "book", "rate", "cancel"),
     ("coordinates", "date_range", "guests", "radius_km", "include_images", "min_rating")),
    ("coworking desk", "coworking desks", "cowork_desk", ("search", "book", "cancel", "list"),
     ("city", "date", "days", "max_price", "weekdays")),
    ("wine pairing", "wine pairings", "wine_pairing", ("get", "search", "list"),
     ("ingredients", "colour", "max_price", "limit", "country")),
    ("paint order", "paint orders", "paint_order", ("create", "estimate", "track", "cancel"),
     ("colour", "quantity", "dimensions", "address", "urgent")),
    ("currency transfer", "currency transfers", "currency_transfer", ("create", "estimate", "track", "list"),
     ("amount", "currency", "contact", "date", "notify")),
    ("savings goal", "savings goals", "savings_goal", ("create", "update", "estimate", "get"),
     ("title", "amount", "currency", "date", "percentage")),
    ("translation job", "translation jobs", "translation_job", ("create", "estimate", "track", "cancel"),
     ("language", "message", "urgent", "file_format", "date")),
    ("birthday card", "birthday cards", "birthday_card", ("send", "create", "list"),
     ("person_name", "message", "address", "colour", "date")),
    ("study group", "study groups", "study_group", ("search", "create", "update", "list"),
     ("topic", "weekdays", "time", "guests", "language", "public")),
    ("tennis court", "tennis courts", "tennis_court", ("search", "book", "cancel", "rate"),
     ("location", "date", "time", "duration_minutes", "guests")),
    ("car service", "car services", "car_service", ("book", "estimate", "cancel", "track"),
     ("address", "date", "time", "urgent", "detailed")),
    ("energy reading", "energy readings", "energy_reading", ("get", "list", "export", "track"),
     ("date_range", "values", "units", "file_format", "detailed", "limit")),
    ("air quality report", "air quality reports", "air_quality_report", ("get", "export", "track"),
     ("coordinates", "days", "detailed", "file_format")),
    ("tide table", "tide tables", "tide_table", ("get", "export"),
     ("city", "date_range", "units", "file_format")),
    ("charity donation", "charity donations", "charity_donation", ("create", "list", "export", "cancel"),
     ("amount", "currency", "frequency", "public", "title")),
    ("plant watering plan", "plant watering plans", "watering_plan", ("create", "update", "get"),
     ("title", "weekdays", "time", "quantity", "notify")),
    ("sports score", "sports scores", "sports_score", ("get", "list", "track"),
     ("title", "date", "country", "detailed", "limit")),
    ("moving quote", "moving quotes", "moving_quote", ("estimate", "list", "book"),
     ("cities", "date", "weight_kg", "quantity", "currency")),
    ("vaccination record", "vaccination records", "vaccination_record", ("get", "update", "export"),
     ("person_name", "date", "file_format", "language")),
    ("art class", "art classes", "art_class", ("search", "book", "cancel", "rate"),
     ("city", "weekdays", "time", "guests", "max_price", "language")),
    ("bakery order", "bakery orders", "bakery_order", ("create", "cancel", "track", "update"),
     ("product", "item_ids", "quantity", "date", "time", "message", "ingredients")),
)

NAME_STYLES = ("snake", "dotted", "camel")


def _tool_name(action: str, stem: str, style: str) -> str:
    if style == "dotted":
        return f"{stem}.{action}"
    if style == "camel":
        words = [action, *stem.split("_")]
        return words[0] + "".join(w.capitalize() for w in words[1:])
    return f"{action}_{stem}"


@dataclass(frozen=True)
class CatalogueTool:
    schema: dict                       # {"name", "description", "parameters"} as the prompt shows it
    noun: str
    nouns: str
    action: str
    kinds: tuple[ArgumentKind, ...]    # its arguments, in schema order


def _catalogue_tool(noun: str, nouns: str, stem: str, action: str, kind_names: Sequence[str]) -> CatalogueTool:
    """The tool of (domain, action): its arguments drawn once, seeded by its stem and action."""
    rng = random.Random(zlib.crc32(f"{stem}/{action}".encode()))
    style = NAME_STYLES[rng.choices(range(3), weights=(6, 2, 2))[0]]
    count = min(len(kind_names), rng.randint(1, 4))
    # The first kinds are the domain's main ones: always offered; the rest are sampled.
    chosen = list(kind_names[:1]) + rng.sample(list(kind_names[1:]), count - 1)
    kinds = tuple(ARGUMENT_KINDS[k] for k in chosen)
    required = [k.name for i, k in enumerate(kinds) if i == 0 or rng.random() < 0.35]
    description = rng.choice(ACTIONS[action]).format(noun=noun, nouns=nouns)
    schema = {
        "name": _tool_name(action, stem, style),
        "description": description[0].upper() + description[1:] + ".",
        "parameters": {"type": "object", "properties": {k.name: dict(k.schema) for k in kinds}, "required": required},
    }
    return CatalogueTool(schema, noun, nouns, action, kinds)


@cache
def tool_catalogue() -> tuple[CatalogueTool, ...]:
    """Every generated tool, in a fixed order (the same in every process)."""
    tools = tuple(_catalogue_tool(noun, nouns, stem, action, kinds)
                  for noun, nouns, stem, actions, kinds in DOMAINS for action in actions)
    names = [t.schema["name"] for t in tools]
    assert len(set(names)) == len(names), "two domains make the same tool name"
    return tools


# ----------------------------------------------------------------------------- requests

_OPENERS = (("", "."), ("Please ", "."), ("Can you ", "?"), ("Could you ", "?"), ("I need to ", "."),
            ("I'd like to ", "."), ("Help me ", "."), ("Quickly ", "."))
_JOINERS = (" and then ", ", and also ", "; after that, ", ". Also ", " and ")


def _call(tool: CatalogueTool, rng: random.Random) -> tuple[str, dict]:
    """(request clause, gold arguments): every required argument, each optional one half the time."""
    required = set(tool.schema["parameters"]["required"])
    stated = [k for k in tool.kinds if k.name in required or rng.random() < 0.5]
    rng.shuffle(stated)
    explicit = rng.random() < 0.25
    arguments = {k.name: k.draw(rng) for k in stated}
    parts = [rng.choice(ACTIONS[tool.action]).format(noun=tool.noun, nouns=tool.nouns)]
    parts += [k.state(arguments[k.name], rng, explicit) for k in stated]
    return " ".join(parts), arguments


def generated_instance(rng: random.Random) -> Instance:
    """One instance: 1 call (most), or 2-3 calls to the same tool or to different tools."""
    catalogue = tool_catalogue()
    n_calls = rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    first = rng.choice(catalogue)
    same_tool = n_calls > 1 and rng.random() < 0.4
    called = [first] * n_calls if same_tool else [first, *rng.sample(catalogue, n_calls - 1)]
    clauses, answers = [], []
    for tool in called:
        clause, arguments = _call(tool, rng)
        clauses.append(clause)
        answers.append({"name": tool.schema["name"], "arguments": arguments})
    opener, end = rng.choice(_OPENERS)
    body = clauses[0]
    for clause in clauses[1:]:
        body += rng.choice(_JOINERS) + clause
    query = opener + body + end
    query = query[0].upper() + query[1:]
    called_names = {t.schema["name"] for t in called}
    # Distractors: often the same domain's other actions, which only the request tells apart.
    stem_mates = [t for t in catalogue if t.noun == first.noun and t.schema["name"] not in called_names]
    others = [t for t in catalogue if t.schema["name"] not in called_names]
    pool = stem_mates if stem_mates and rng.random() < 0.5 else others
    distractors = rng.sample(pool, min(len(pool), rng.randint(0, 3)))
    offered = list({t.schema["name"]: t for t in called}.values()) + distractors
    rng.shuffle(offered)
    return function_calling_instance(query, [t.schema for t in offered], answers, generator="fncall_generator")


def generate_function_calling(n: int, seed: int = 0) -> list[Instance]:
    """`n` distinct seeded instances over the whole tool catalogue (see the module doc)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    instances: list[Instance] = []
    seen: set[str] = set()
    for _ in range(10 * n + 100):
        if len(instances) == n:
            return instances
        instance = generated_instance(rng)
        if instance.id not in seen and not _repeats_a_call(instance):
            seen.add(instance.id)
            instances.append(instance)
    raise ValueError(f"the generator gave only {len(instances)} distinct instances of the {n} asked for")


def _repeats_a_call(instance: Instance) -> bool:
    calls = [json.dumps(c, sort_keys=True) for c in instance.data["answers"]]
    return len(set(calls)) != len(calls)
