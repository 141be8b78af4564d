/* Writing a JSON string to stdout: shared by vdsoprobe.c and syscount.c, whose only output is
 * one JSON document each. Everything outside printable ASCII is escaped, so that no byte a
 * hostile environment put into a name (a signal name, an error text) reaches the host raw. */
#ifndef VDSOMATRIX_JSON_STRING_H
#define VDSOMATRIX_JSON_STRING_H

#include <stdio.h>

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

#endif
