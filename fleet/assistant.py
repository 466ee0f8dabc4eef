"""Phone-assistant transcripts: what each device's owner asks a voice assistant, and what it answers.

Scenario: phones fine-tune a small language model into their owners' assistant. The built-in model was
pretrained on Shakespeare, so the format (a request line, an answer line), the words (alarms, timers, the
weather) and the numbers are all new to it: federated fine-tuning has a whole domain to learn. Each owner is
also unlike the others, in ways a shared model cannot know and a personal adapter can: their name, city and
contacts, the hour they wake, whether they read times in 12 or 24 hours and temperatures in Celsius or
Fahrenheit, how they phrase each request, and whether their assistant answers briefly, warmly or formally.

One owner is one data client; one exchange (request and answer) is one "speech", so that the train/test split
(fleet.data.split_client) holds out whole exchanges. Every draw comes from a fleet.rng stream keyed by
(seed, purpose, owner): an owner's transcript depends on the seed and their own index only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.data import ClientText
from fleet.rng import stream

NAMES = ("Ada", "Ben", "Chloe", "Dan", "Eva", "Finn", "Grace", "Hugo", "Ines", "Jack", "Kira", "Leo", "Maya",
         "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yara", "Zoe", "Amir", "Bea",
         "Carl", "Dina", "Emil", "Fay", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Milo", "Nina", "Omar",
         "Pia", "Raj", "Sofia", "Theo", "Uma", "Vik", "Wren", "Xena", "Yusuf", "Zack", "Alba")
CITIES = ("Lisbon", "Porto", "Madrid", "Lyon", "Turin", "Munich", "Krakow", "Oslo", "Dublin", "Leeds", "Ghent",
          "Graz", "Brno", "Riga", "Malmo", "Bergen", "Seville", "Genoa", "Basel", "Tartu")
RELATIONS = ("mum", "dad", "sister", "brother", "boss", "partner", "coach", "neighbour")
ARTISTS = ("Nina Simone", "Daft Punk", "Miles Davis", "Adele", "Bach", "Queen", "Bjork", "Fela Kuti",
           "Radiohead", "Chopin", "Dolly Parton", "Kraftwerk")
PLACES = ("the gym", "the office", "school", "the station", "the market", "the clinic", "the park", "the library")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SKIES = ("sunny", "cloudy", "rainy", "windy", "foggy", "clear")
TONES = ("brief", "warm", "formal")

# Each intent: the phrasings an owner may use (each owner keeps one or two of them), and the answer in each tone.
REQUESTS = {
    "alarm": ("set an alarm for {time}", "wake me up at {time}", "alarm at {time} please", "I need to be up at {time}"),
    "timer": ("timer for {minutes} minutes", "set a {minutes} minute timer", "count down {minutes} minutes",
              "start a timer, {minutes} minutes"),
    "message": ("text my {relation} that I am running late", "tell {contact} I am on my way",
                "send {contact} a message: see you soon", "message my {relation}: call me back"),
    "call": ("call {contact}", "ring my {relation}", "phone {contact} on speaker", "get my {relation} on the line"),
    "weather": ("what is the weather today", "will it rain in {city}", "weather for {day}",
                "do I need a coat today"),
    "music": ("play some {artist}", "put on {artist}", "I want to hear {artist}", "music by {artist} please"),
    "navigate": ("take me to {place}", "directions to {place}", "how long to {place}", "route to {place} please"),
    "reminder": ("remind me to call my {relation} at {time}", "reminder: {place} at {time}",
                 "remind me at {time} to go to {place}", "at {time} remind me about {place}"),
}
ANSWERS = {
    "alarm": ("Alarm {time}.", "Done, {name}! Your alarm is set for {time}. Sleep well.",
              "Certainly. An alarm has been set for {time}."),
    "timer": ("Timer {minutes} min.", "Sure, {name}, {minutes} minutes starting now.",
              "Very well. A timer of {minutes} minutes is running."),
    "message": ("Sent to {contact}.", "Sent! {contact} will know, {name}.",
                "Your message to {contact} has been sent."),
    "call": ("Calling {contact}.", "Calling {contact} for you now, {name}.", "Certainly. Calling {contact}."),
    "weather": ("{city}: {sky}, {temp}.", "Looks {sky} in {city} today, {name}, around {temp}.",
                "The forecast for {city} is {sky}, with a high of {temp}."),
    "music": ("Playing {artist}.", "Great pick, {name}! Playing {artist}.", "Now playing {artist}."),
    "navigate": ("{place}: {minutes} min by {mode}.", "You are {minutes} minutes from {place} by {mode}, {name}.",
                 "The route to {place} takes {minutes} minutes by {mode}."),
    "reminder": ("Reminder {time}.", "Got it, {name}, I will remind you at {time}.",
                 "Certainly. A reminder has been set for {time}."),
}
MODES = ("bus", "train", "bike", "car", "foot")


@dataclass(frozen=True)
class Owner:
    """One device owner: who they are and the habits their transcript follows."""

    name: str
    city: str
    contacts: dict[str, str]  # relation -> name
    wake_minute: int  # minutes after midnight
    clock_24h: bool
    celsius: bool
    tone: int  # index into TONES
    mode: str
    artists: tuple[str, ...]
    places: tuple[str, ...]
    phrasings: dict[str, tuple[int, ...]]  # intent -> the REQUESTS phrasings this owner uses
    intent_weights: np.ndarray  # how often they ask for each intent, in REQUESTS order


def owner(seed: int, index: int) -> Owner:
    rng = stream(seed, "assistant-owner", index)
    relations = rng.choice(RELATIONS, 4, replace=False)
    return Owner(
        name=str(rng.choice(NAMES)),
        city=str(rng.choice(CITIES)),
        contacts={str(r): str(n) for r, n in zip(relations, rng.choice(NAMES, 4, replace=False))},
        wake_minute=int(rng.integers(5 * 60, 9 * 60) // 5 * 5),
        clock_24h=bool(rng.random() < 0.5),
        celsius=bool(rng.random() < 0.7),
        tone=int(rng.integers(len(TONES))),
        mode=str(rng.choice(MODES)),
        artists=tuple(str(a) for a in rng.choice(ARTISTS, 2, replace=False)),
        places=tuple(str(p) for p in rng.choice(PLACES, 3, replace=False)),
        phrasings={intent: tuple(int(k) for k in rng.choice(len(forms), int(rng.integers(1, 3)), replace=False))
                   for intent, forms in REQUESTS.items()},
        intent_weights=rng.dirichlet(np.full(len(REQUESTS), 0.7)),
    )


def clock(minute: int, clock_24h: bool) -> str:
    hour, minute = divmod(minute % 1440, 60)
    if clock_24h:
        return f"{hour:02d}:{minute:02d}"
    return f"{(hour - 1) % 12 + 1}:{minute:02d} {'am' if hour < 12 else 'pm'}"


def exchange(who: Owner, rng: np.random.Generator) -> tuple[str, str]:
    """One request in the owner's own words and the answer in their assistant's tone."""
    intent = list(REQUESTS)[rng.choice(len(REQUESTS), p=who.intent_weights)]
    relation = str(rng.choice(list(who.contacts)))
    # Alarms sit near the owner's waking time; other times fall anywhere in the day, on the quarter hour.
    minute = who.wake_minute + int(rng.integers(-2, 3)) * 5 if intent == "alarm" else int(rng.integers(0, 96)) * 15
    celsius = int(rng.integers(-2, 31))
    slots = {
        "name": who.name, "city": who.city, "relation": relation, "contact": who.contacts[relation],
        "time": clock(minute, who.clock_24h), "minutes": int(rng.choice((5, 10, 15, 20, 25, 30, 45))),
        "day": str(rng.choice(WEEKDAYS)), "artist": str(rng.choice(who.artists)),
        "place": str(rng.choice(who.places)), "mode": who.mode, "sky": str(rng.choice(SKIES)),
        "temp": f"{celsius} C" if who.celsius else f"{round(celsius * 9 / 5 + 32)} F",
    }
    request = REQUESTS[intent][int(rng.choice(who.phrasings[intent]))]
    return f"> {request.format(**slots)}", f"< {ANSWERS[intent][who.tone].format(**slots)}"


def assistant_clients(owners: int, exchanges: int, seed: int) -> list[ClientText]:
    """`owners` data clients of `exchanges` exchanges each."""
    clients = []
    for i in range(owners):
        who, rng = owner(seed, i), stream(seed, "assistant-exchanges", i)
        clients.append(ClientText(f"owner-{i:05d}", tuple(exchange(who, rng) for _ in range(exchanges))))
    return clients
