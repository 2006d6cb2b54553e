"""Money as integer minor units with an ISO 4217 currency. Never floats."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# ISO 4217 minor-unit exponents. Currencies missing here are rejected rather than guessed:
# a wrong exponent is a refund off by a factor of 10 or 100.
_ZERO_DECIMAL = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMAL = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMAL = "CLF UYW"
# ANG stays beside XCG, which replaced it in 2025, and VES beside VED: payments made in them can still be refunded.
_TWO_DECIMAL = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD CAD "
    "CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD "
    "HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD "
    "MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON "
    "RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD "
    "TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

CURRENCY_EXPONENTS: dict[str, int] = {
    **{code: 0 for code in _ZERO_DECIMAL.split()},
    **{code: 2 for code in _TWO_DECIMAL.split()},
    **{code: 3 for code in _THREE_DECIMAL.split()},
    **{code: 4 for code in _FOUR_DECIMAL.split()},
}


class UnknownCurrency(ValueError):
    """The code is not an ISO 4217 currency we know the exponent of."""


def minor_unit_exponent(currency: str) -> int:
    """How many decimals the currency has: JPY 0, USD 2, KWD 3."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrency(f"unknown ISO 4217 currency: {currency!r}") from None


def validate_currency(code: str) -> str:
    code = code.upper()
    minor_unit_exponent(code)
    return code


Currency = Annotated[str, Field(min_length=3, max_length=3, examples=["EUR"]), AfterValidator(validate_currency)]


def _known_code(code: str) -> str:
    if code not in CURRENCY_EXPONENTS:
        raise ValueError("must be an ISO 4217 currency code in capitals, e.g. EUR")
    return code


# Currency as an HTTP API takes it: exactly one of the codes listed (its OpenAPI enum), no case folding.
CurrencyCode = Annotated[
    str, Field(examples=["EUR"], json_schema_extra={"enum": sorted(CURRENCY_EXPONENTS)}), AfterValidator(_known_code)
]
# A trillion minor units (ten billion EUR, a trillion JPY) is past any one payment; the cap keeps every sum of
# amounts far inside PostgreSQL's bigint, so no total can overflow.
MAX_MINOR_UNITS = 10**12
MinorUnits = Annotated[
    int, Field(ge=0, le=MAX_MINOR_UNITS, strict=True, description="amount in the currency's minor units")
]
# A refund's amount: a payment may be of 0 (a free trial), a refund of nothing is not a refund.
RefundMinorUnits = Annotated[
    int, Field(gt=0, le=MAX_MINOR_UNITS, strict=True, description="amount in the currency's minor units, above 0")
]
# An amount as an answer holds it: described as MinorUnits is, with no bounds to check.
MinorUnitsOut = Annotated[int, Field(description="in the currency's minor units (cents, yen)")]


class Money(BaseModel):
    """An amount in minor units (cents, yen, fils) and its currency."""

    model_config = ConfigDict(frozen=True)

    amount: MinorUnits
    currency: Currency

    def format(self) -> str:
        """As people read it: ``€12.50``, ``¥1,500``, ``KWD 1.250`` (``format_amount``)."""
        return format_amount(self.amount, self.currency)


# Only symbols that are unambiguous to a reader; other currencies show their ISO code (``KWD 1.250``).
CURRENCY_SYMBOLS = {"EUR": "€", "GBP": "£", "JPY": "¥", "USD": "$", "INR": "₹", "KRW": "₩"}


def format_amount(amount: int, currency: str) -> str:
    """Minor units as people read them, everywhere an amount is shown to someone (pages, emails, alerts, the CLI):
    the currency's decimals, grouped thousands, its symbol where well known. ``(123456, "EUR") -> "€1,234.56"``,
    ``(1500, "JPY") -> "¥1,500"``, ``(1250, "KWD") -> "KWD 1.250"``, ``(-250, "USD") -> "-$2.50"``."""
    exponent = minor_unit_exponent(currency)
    whole, fraction = divmod(abs(amount), 10**exponent)
    number = f"{whole:,}" + (f".{fraction:0{exponent}d}" if exponent else "")
    symbol = CURRENCY_SYMBOLS.get(currency)
    text = f"{symbol}{number}" if symbol else f"{currency} {number}"
    return f"-{text}" if amount < 0 else text
