// Money from minor units, exactly: amounts are integers (or decimal strings, past 2^53) of
// the currency's smallest unit, and never pass through a floating-point number.

/** Digits after the decimal point in `currency` (2 for USD, 0 for JPY). */
export function exponentOf(currency) {
  return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
}

/** `minor` (a number, a decimal string or a BigInt) as a decimal string in major units. */
export function toDecimal(minor, currency) {
  const exponent = exponentOf(currency);
  let units = BigInt(minor);
  const negative = units < 0n;
  if (negative) units = -units;
  const digits = units.toString().padStart(exponent + 1, "0");
  const whole = digits.slice(0, digits.length - exponent);
  const fraction = exponent ? "." + digits.slice(digits.length - exponent) : "";
  return (negative ? "-" : "") + whole + fraction;
}

/** `minor` formatted for people: "$1,234.50". Intl formats the exact decimal string. */
export function formatMoney(minor, currency, { sign = false } = {}) {
  const format = new Intl.NumberFormat(undefined, {
    style: "currency", currency, signDisplay: sign ? "exceptZero" : "auto",
  });
  return format.format(toDecimal(minor, currency));
}

/**
 * What a person typed ("12.5", "1,234.56", "1 000") in minor units, as a BigInt, or an
 * error in words. At most the currency's decimals; no sign, no exponent.
 */
export function parseAmount(text, currency) {
  const exponent = exponentOf(currency);
  const cleaned = String(text).trim().replace(/[\s,_']/g, "");
  if (!cleaned) return { error: "Enter an amount." };
  const match = /^(\d+)(?:\.(\d*))?$/.exec(cleaned);
  if (!match) return { error: "Enter an amount in digits, like 12.50." };
  const fraction = match[2] || "";
  if (fraction.length > exponent) {
    return { error: exponent ? `At most ${exponent} digits after the point.` : `${currency} has no cents.` };
  }
  const minor = BigInt(match[1] + fraction.padEnd(exponent, "0"));
  if (minor <= 0n) return { error: "The amount must be more than zero." };
  return { minor };
}
