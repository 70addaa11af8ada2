// The URL as the request log keeps it: a credential a client put in the query string (?token=,
// ?access_token=, ?api_key=...) is replaced, since the service never takes one from there and a
// log is the wrong place for it. The path and the other parameters stay as they came.

const SENSITIVE = /token|secret|passw|pwd|auth|api[-_]?key|access[-_]?key|credential|signature|session/i;

export function redactUrl(url: string): string {
  const query = url.indexOf("?");
  if (query === -1) return url;
  const params = url
    .slice(query + 1)
    .split("&")
    .map((param) => {
      const eq = param.indexOf("=");
      const name = eq === -1 ? param : param.slice(0, eq);
      return SENSITIVE.test(safeDecode(name)) ? `${name}=[redacted]` : param;
    });
  return `${url.slice(0, query)}?${params.join("&")}`;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text.replaceAll("+", " "));
  } catch {
    return text;
  }
}
