// The host side of MCP Apps for the view's browser test: the official AppBridge (@modelcontextprotocol/ext-apps)
// renders the view in a sandboxed iframe under the CSP derived from the view's own declaration, as hosts do.
// The page has no MCP client of its own: tools/call and resources/read from the view go to window.pyCallTool and
// window.pyReadResource, which the test exposes and answers from the real server. Driven through window.host.
import { AppBridge, PostMessageTransport, buildAllowAttribute } from "@modelcontextprotocol/ext-apps/app-bridge";

/** The CSP a host derives from what the view's resource declares in `_meta.ui.csp`, as strict as the strictest host
 * we know (the MCP Inspector web app): nothing but inline script and style and what the declaration names; an
 * undeclared view may load no image at all. So a view that forgets to declare what it loads fails here too. */
function policy(csp) {
  const resources = (csp?.resourceDomains ?? []).join(" ");
  const inline = `'unsafe-inline'${resources ? ` ${resources}` : ""}`;
  const only = (list, none = "'none'") => (list ?? []).join(" ") || none;
  return [
    "default-src 'none'",
    `connect-src ${only(csp?.connectDomains)}`,
    `script-src ${inline}`,
    `style-src ${inline}`,
    `img-src ${resources || "'none'"}`,
    `font-src ${resources || "'none'"}`,
    `media-src ${resources || "'none'"}`,
    `frame-src ${only(csp?.frameDomains)}`,
    `base-uri ${only(csp?.baseUriDomains, "'self'")}`,
    "form-action 'none'",
    "object-src 'none'",
    "worker-src 'none'",
  ].join("; ");
}

const LIGHT_DARK = {  // what Claude sends: light-dark() pairs, so a theme change alone re-colours the view
  "--color-background-primary": "light-dark(#faf9f5, #262624)",
  "--color-background-secondary": "light-dark(#f0eee6, #30302e)",
  "--color-background-tertiary": "light-dark(#e8e6dc, #3a3a37)",
  "--color-text-primary": "light-dark(#141413, #f5f4ef)",
  "--color-text-secondary": "light-dark(#5e5d59, #b7b5a9)",
  "--color-border-primary": "light-dark(#d1cfc5, #4a4945)",
  "--color-border-secondary": "light-dark(#e0ded4, #3e3d3a)",
  "--font-sans": "\"DejaVu Sans\", sans-serif",
};

window.host = {
  toolCalls: [],  // params of every tools/call the view sent
  answers: [],  // { name, bytes } of every tools/call answer, as JSON
  reads: [],  // params of every resources/read
  sizes: [],  // ui/notifications/size-changed
  modelContext: null,  // the last ui/update-model-context
  bridge: null,

  /** Render the view (`html`, the ui:// resource's text) and wait for its ui/notifications/initialized. */
  async mount(html, { csp, permissions, theme = "light", toolInfo, capabilities } = {}) {
    const meta = `<meta http-equiv="Content-Security-Policy" content="${policy(csp).replace(/"/g, "&quot;")}">`;
    const iframe = document.createElement("iframe");
    iframe.id = "view";
    iframe.title = "flux-klein view";
    iframe.setAttribute("sandbox", "allow-scripts");
    const allow = buildAllowAttribute(permissions);
    if (allow) iframe.setAttribute("allow", allow);
    document.getElementById("host").replaceChildren(iframe);
    this.context = { theme, platform: "web", locale: "en-GB", displayMode: "inline", availableDisplayModes: ["inline"],
                     containerDimensions: { maxWidth: 900 }, styles: { variables: LIGHT_DARK },
                     ...(toolInfo ? { toolInfo } : {}) };
    const bridge = this.bridge = new AppBridge(null, { name: "flux-klein-test-host", version: "1" },
      capabilities ?? { serverTools: {}, serverResources: {}, updateModelContext: { text: {} }, logging: {} },
      { hostContext: this.context });
    bridge.oncalltool = async (params) => {
      this.toolCalls.push(params);
      const answer = await window.pyCallTool(params);
      this.answers.push({ name: params.name, bytes: new TextEncoder().encode(JSON.stringify(answer)).length });
      return answer;
    };
    bridge.onreadresource = async (params) => {
      this.reads.push(params);
      return await window.pyReadResource(params);
    };
    bridge.onupdatemodelcontext = async (params) => { this.modelContext = params; return {}; };
    bridge.addEventListener("sizechange", (size) => {
      this.sizes.push(size);
      if (size.height != null) iframe.style.height = `${size.height}px`;
    });
    const initialized = new Promise((resolve) => bridge.addEventListener("initialized", resolve));
    iframe.srcdoc = html.replace(/<head[^>]*>/i, (head) => head + meta);
    await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
    await initialized;
  },
  toolInput(args) { return this.bridge.sendToolInput({ arguments: args }); },
  toolResult(result) { return this.bridge.sendToolResult(result); },
  policy,
  theme(theme) { this.context = { ...this.context, theme }; this.bridge.setHostContext(this.context); },
};
