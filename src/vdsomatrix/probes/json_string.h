/* Writing a JSON string to stdout: the helper's and syscount's only output is one JSON document
 * each. Everything outside printable ASCII is escaped, so that no byte a hostile environment put
 * into a name (a path, a signal name, an error text) reaches the host raw. */
#ifndef VDSOMATRIX_JSON_STRING_H
#define VDSOMATRIX_JSON_STRING_H

/* s, quoted and escaped. */
void json_string(const char *s);

/* s quoted, or null when s is NULL. */
void json_string_or_null(const char *s);

#endif
