<?xml version="1.0" encoding="utf-8"?>
<!-- Makes feed.atom and feed.rss readable in a browser. Text only: entry HTML is never
     rendered here (no disable-output-escaping), so nothing from a source can run. -->
<xsl:stylesheet version="1.0"
  xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
  xmlns:atom="http://www.w3.org/2005/Atom"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  exclude-result-prefixes="atom dc">
<xsl:output method="html" encoding="utf-8" doctype-system="about:legacy-compat"/>

<xsl:variable name="title" select="/atom:feed/atom:title | /rss/channel/title"/>
<xsl:variable name="home" select="/atom:feed/atom:link[not(@rel) or @rel='alternate']/@href | /rss/channel/link"/>

<xsl:template match="/">
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<meta name="color-scheme" content="light dark"/>
<title><xsl:value-of select="$title"/> (feed)</title>
<link rel="icon" href="data:,"/>
<style>
:root { --bg: #fff; --fg: #1b1b1b; --muted: #555; --link: #0b4fa8; --rule: #ddd; --note: #eef2f7; }
@media (prefers-color-scheme: dark) { :root { --bg: #121417; --fg: #e9e9e9; --muted: #b3b3b3; --link: #8fbdf7; --rule: #33373d; --note: #232a33; } }
body { margin: 0; background: var(--bg); color: var(--fg); font: 1rem/1.6 system-ui, sans-serif; overflow-wrap: break-word; }
.wrap { max-width: 46rem; margin: 0 auto; padding: 0 1rem; }
a { color: var(--link); }
header { border-bottom: 1px solid var(--rule); padding: 1.25rem 0 1rem; }
h1 { margin: 0; font-size: 1.6rem; line-height: 1.25; }
.note { background: var(--note); padding: .75rem 1rem; border-radius: .5rem; margin: 1rem 0 0; }
.item { padding: .75rem 0; border-bottom: 1px solid var(--rule); }
.item h2 { margin: 0; font-size: 1.15rem; line-height: 1.35; }
.meta { margin: .2rem 0 0; font-size: .875rem; color: var(--muted); }
</style>
</head>
<body>
<header>
  <div class="wrap">
    <h1><xsl:value-of select="$title"/></h1>
    <p class="note">This is a web feed. Copy this page's address into your feed reader to subscribe,
      or <a href="{$home}">read the stories on the website</a>.</p>
  </div>
</header>
<main>
  <div class="wrap">
    <xsl:apply-templates select="/atom:feed/atom:entry | /rss/channel/item"/>
  </div>
</main>
</body>
</html>
</xsl:template>

<xsl:template match="atom:entry">
  <article class="item">
    <h2><a href="{atom:link[not(@rel) or @rel='alternate']/@href}"><xsl:value-of select="atom:title"/></a></h2>
    <p class="meta"><xsl:value-of select="atom:author/atom:name"/> · <time datetime="{atom:published}"><xsl:value-of select="substring(atom:published, 1, 10)"/></time></p>
  </article>
</xsl:template>

<xsl:template match="item">
  <article class="item">
    <h2><a href="{link}"><xsl:value-of select="title"/></a></h2>
    <p class="meta"><xsl:value-of select="dc:creator"/> · <xsl:value-of select="pubDate"/></p>
  </article>
</xsl:template>
</xsl:stylesheet>
