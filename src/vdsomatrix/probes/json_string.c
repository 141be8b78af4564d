/* JSON strings on stdout (see json_string.h). */
#include <stdio.h>

#include "json_string.h"

void json_string(const char *s)
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

void json_string_or_null(const char *s)
{
	if (s)
		json_string(s);
	else
		fputs("null", stdout);
}
