"""Free text on a synthetic transaction: the merchant descriptor printed on the statement and, for some
transactions, a note the customer wrote (a payment memo or a message to the bank).

Part of the fraud signal lives only here, the way it does in a real bank's data: card testers hit throwaway
web shops with random descriptors, account takeovers cash out through crypto and money-transfer merchants,
and scam victims (whose payments look ordinary in every number) write what the scammer told them ("the bank's security team said to move my savings to a
safe account"). Every phrase is composed from interchangeable parts, so the same script comes in many
wordings, and some legitimate customers write notes that sound alarming (a raffle's gift cards, a real
move of savings), so the words alone do not give the answer away.
"""

from __future__ import annotations

import numpy as np

CITIES = ["COLUMBUS OH", "AUSTIN TX", "DENVER CO", "SEATTLE WA", "TAMPA FL", "PHOENIX AZ", "BOSTON MA",
          "CHICAGO IL", "RALEIGH NC", "PORTLAND OR"]
FOREIGN_CITIES = {"GB": "LONDON", "DE": "BERLIN", "FR": "PARIS", "MX": "CANCUN", "BR": "SAO PAULO",
                  "NG": "LAGOS", "RU": "MOSCOW", "CN": "SHENZHEN", "IN": "MUMBAI", "RO": "BUCHAREST"}
SHOPS = ["BLUE BOTTLE", "LUCA'S TRATTORIA", "GREEN LEAF", "CORNER DELI", "PHO 88", "THE DAILY GRIND",
         "MAPLE BAKERY", "EL FARO TACOS"]
BANKS = ["CHASE", "BOFA", "WELLS FARGO", "CITI", "PNC", "ALLPOINT"]
MERCHANTS = {
    "grocery": ["KROGER #{n}", "WHOLEFDS MKT #{n}", "TRADER JOE S #{n}", "SAFEWAY #{n}", "ALDI {n}", "PUBLIX #{n}"],
    "restaurant": ["SQ *{shop}", "TST* {shop}", "CHIPOTLE {n}", "MCDONALD'S F{n}", "STARBUCKS STORE {n}",
                   "DOORDASH*{shop}"],
    "fuel": ["SHELL OIL {n}", "CHEVRON {n}", "EXXONMOBIL {n}", "BP#{n}", "CIRCLE K {n}"],
    "pharmacy": ["CVS/PHARMACY #{n}", "WALGREENS #{n}", "RITE AID {n}"],
    "online_retail": ["AMZN Mktp US*{code}", "EBAY O*{code}", "ETSY.COM*{code}", "TARGET.COM *{code}",
                      "WALMART.COM {code}"],
    "electronics": ["BEST BUY {n}", "APPLE.COM/BILL", "NEWEGG*{code}", "APPLE STORE R{n}", "B&H PHOTO {n}"],
    "travel": ["DELTA AIR {n}", "UNITED {n}", "MARRIOTT {city}", "UBER *TRIP {code}", "AIRBNB * {code}",
               "HERTZ RENT-A-CAR {n}"],
    "gift_cards": ["TARGET GIFT CARD {n}", "AMAZON GIFT CARD {code}", "STARBUCKS CARD RELOAD", "BLACKHAWK GIFT {n}"],
}
# merchants where stolen cards are tested or cashed out; ordinary customers use some of them too
THROWAWAY_SHOPS = ["PAYPAL *{code} DONATE", "WWW.{word}SHOP.NET", "SP * {word} STORE {code}", "DIGITAL GOODS*{code}",
                   "{word}-DEALS.COM {code}"]
CASH_OUT = ["COINBASE.COM {code}", "BINANCE *{code}", "WU DIGITAL *{code}", "MONEYGRAM ONLINE {n}",
            "CASH APP*{code}", "CRYPTO.COM {code}"]
GIFT_RESALE = ["GIFTCARDMALL*{code}", "RAISE.COM {code}", "CARDCASH*{code}", "PREPAID DIGITAL {code}"]
WORDS = ["MEGA", "BEST", "QUICK", "SUPER", "TOP", "VALUE", "PRIME", "LUCKY"]

# a scam victim's note: who contacted them, what they were told, what they are doing, the pressure
SCAM_WHO = ["the bank's fraud department", "someone from the bank's security team", "a man from the IRS",
            "my account manager", "a police officer", "an Apple support agent", "the fraud prevention line"]
SCAM_CLAIM = ["said my account was compromised", "told me my card had been hacked", "says there's a warrant in my name",
              "said my savings are at risk", "told me someone is using my identity"]
SCAM_ACTION = ["and told me to move everything to a safe account", "so I'm sending the money to the account they gave me",
               "and asked me to buy gift cards to clear it", "and I have to pay the fee today",
               "so I'm buying bitcoin to protect it"]
FAMILY_WHO = ["my grandson", "my nephew", "my daughter", "my son", "my brother"]
FAMILY_TROUBLE = ["is in jail", "was in a car accident abroad", "lost his wallet in Mexico", "is stuck at the border",
                  "is in hospital and can't pay"]
FAMILY_ASK = ["and needs bail money today", "and needs money wired right now", "and asked me not to tell his parents",
              "and the lawyer says to pay in gift cards"]
BOSS_WHO = ["my boss", "the CEO", "our director", "my manager"]
BOSS_ASK = ["texted me to buy 10 gift cards for a client", "asked me to get $500 in Google Play cards",
            "needs iTunes cards before the meeting", "wants Amazon cards sent to him by email"]
BOSS_TAIL = [" and send him the codes", ", keep it quiet", ", he'll pay me back", ", very urgent"]
LOVE = ["my boyfriend on WhatsApp showed me a crypto platform", "an advisor on Telegram says this coin will triple",
        "my online girlfriend needs money for her plane ticket", "a friend from Instagram is teaching me forex trading"]
PRESSURE = ["", "", " asap", ", they said not to tell anyone", " before 5pm", ", urgent", " today"]

EVERYDAY = ["dinner with the team", "groceries for the week", "rent share for {month}", "birthday present for my sister",
            "new running shoes", "paying back {name} for the concert", "flights for the wedding", "office coffee run",
            "kids' school supplies", "anniversary dinner", "phone case", "{name}'s farewell lunch", "gas for the road trip",
            "vet bill for the dog", "parts for the bike", "christmas shopping"]
# legitimate notes that a keyword rule would flag
ALARMING_BUT_FINE = ["gift cards for the office raffle, boss approved", "moving my savings to the new joint account",
                     "urgent: paying the plumber before he leaves", "my son needs money for his textbooks",
                     "bought some bitcoin, my own decision", "replacing the card the bank said was compromised",
                     "gift cards for the kids' teachers"]
MONTHS = ["january", "march", "june", "september", "december"]
NAMES = ["sam", "maria", "dev", "alex", "jo", "priya"]

NOTE_RATE = {"none": 0.15, "card_testing": 0.05, "account_takeover": 0.15, "new_account": 0.25, "skimming": 0.0,
             "scam_victim": 0.7}


def _code(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(list(alphabet), size=int(rng.integers(4, 8))))


def _fill(rng: np.random.Generator, pattern: str, city: str) -> str:
    return pattern.format(n=int(rng.integers(10, 9999)), code=_code(rng), shop=rng.choice(SHOPS), city=city,
                          word=rng.choice(WORDS))


def merchant_descriptor(rng: np.random.Generator, category: str, channel: str, country: str, pattern: str) -> str:
    place = rng.choice(CITIES) if country == "US" else f"{FOREIGN_CITIES.get(country, 'INTL')} {country}"
    if channel == "atm":
        return f"ATM WDL {rng.choice(BANKS)} {place}"
    r = rng.random()
    if pattern == "card_testing" and r < 0.6 or pattern == "none" and channel == "online" and r < 0.02:
        return _fill(rng, rng.choice(THROWAWAY_SHOPS), place)
    if pattern in ("account_takeover", "scam_victim") and r < 0.4 or pattern == "none" and r < 0.01:
        return _fill(rng, rng.choice(CASH_OUT), place)
    if pattern == "new_account" and r < 0.4 or pattern == "none" and category == "gift_cards" and r < 0.1:
        return _fill(rng, rng.choice(GIFT_RESALE), place)
    text = _fill(rng, rng.choice(MERCHANTS[category]), place)
    return text if channel == "online" else f"{text} {place}"


def customer_note(rng: np.random.Generator, pattern: str) -> str | None:
    if rng.random() >= NOTE_RATE.get(pattern, 0.0):
        return None
    if pattern == "none":
        if rng.random() < 0.12:
            return str(rng.choice(ALARMING_BUT_FINE))
        return str(rng.choice(EVERYDAY)).format(month=rng.choice(MONTHS), name=rng.choice(NAMES))
    if pattern == "card_testing":
        return str(rng.choice(["test", "checking the card works", "1"]))
    script = rng.choice(["scam", "family", "boss", "love"], p=[0.2, 0.1, 0.6, 0.1] if pattern == "new_account"
                        else [0.45, 0.2, 0.15, 0.2])
    if script == "scam":
        text = f"{rng.choice(SCAM_WHO)} {rng.choice(SCAM_CLAIM)} {rng.choice(SCAM_ACTION)}"
    elif script == "family":
        text = f"{rng.choice(FAMILY_WHO)} {rng.choice(FAMILY_TROUBLE)} {rng.choice(FAMILY_ASK)}"
    elif script == "boss":
        text = f"{rng.choice(BOSS_WHO)} {rng.choice(BOSS_ASK)}{rng.choice(BOSS_TAIL)}"
    else:
        text = str(rng.choice(LOVE))
    return text + str(rng.choice(PRESSURE))
